package sparkmaker;

import java.util.Set;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import scala.Function1;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * spark.sql.extensions for the SQL server: refuses, before they run, the statements that
 * let a SQL client touch the server's file system or run code of its own:
 * INSERT OVERWRITE [LOCAL] DIRECTORY, LOAD DATA, ADD JAR/FILE/ARCHIVE, CREATE FUNCTION ... USING,
 * and reflect()/java_method(). (SQL on raw files is off by spark.sql.runSQLOnFiles=false.)
 */
public class SqlGuard extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
    static final Set<String> REFUSED = Set.of(
        "InsertIntoDir", "InsertIntoDataSourceDirCommand", "InsertIntoHiveDirCommand",
        "LoadDataCommand", "AddJarsCommand", "AddFilesCommand", "AddArchivesCommand",
        "CreateFunctionCommand", "CreateFunction", "CallMethodViaReflection");

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectCheckRule(new AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>>() {
            @Override
            public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
                return new AbstractFunction1<LogicalPlan, BoxedUnit>() {
                    @Override
                    public BoxedUnit apply(LogicalPlan plan) {
                        check(plan);
                        return BoxedUnit.UNIT;
                    }
                };
            }
        });
        return BoxedUnit.UNIT;
    }

    static void check(LogicalPlan plan) {
        refuse(plan.getClass().getSimpleName());
        scala.collection.Iterator<Expression> expressions = plan.expressions().iterator();
        while (expressions.hasNext()) {
            checkExpression(expressions.next());
        }
        scala.collection.Iterator<LogicalPlan> children = plan.children().iterator();
        while (children.hasNext()) {
            check(children.next());
        }
    }

    static void checkExpression(Expression expression) {
        refuse(expression.getClass().getSimpleName());
        scala.collection.Iterator<Expression> children = expression.children().iterator();
        while (children.hasNext()) {
            checkExpression(children.next());
        }
    }

    static void refuse(String name) {
        if (REFUSED.contains(name)) {
            throw new SecurityException("refused by the sparkmaker SQL server: " + name
                + " (SQL clients may read the tables, not the server's files or code)");
        }
    }
}
