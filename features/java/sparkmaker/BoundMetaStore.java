package sparkmaker;

import java.net.InetSocketAddress;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.TSetIpAddressProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;

/**
 * The Hive metastore service (Hive 2.3's HiveMetaStore, unsecured Thrift path) bound to one
 * address: Hive 2.3 has no setting for the bind address and listens on every interface.
 *
 *     java -cp CONF:CLASSES:$SPARK_HOME/jars/* sparkmaker.BoundMetaStore HOST PORT
 */
public class BoundMetaStore {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: sparkmaker.BoundMetaStore HOST PORT");
            System.exit(2);
        }
        HiveConf conf = new HiveConf(HiveMetaStore.HMSHandler.class);
        IHMSHandler handler = HiveMetaStore.newRetryingHMSHandler(
            new HiveMetaStore.HMSHandler("new db based metaserver", conf, false), conf);
        TServerSocket socket = new TServerSocket(new InetSocketAddress(args[0], Integer.parseInt(args[1])));
        TThreadPoolServer.Args serverArgs = new TThreadPoolServer.Args(socket)
            .processor(new TSetIpAddressProcessor<>(handler))
            .transportFactory(new TTransportFactory())
            .protocolFactory(new TBinaryProtocol.Factory())
            .inputProtocolFactory(new TBinaryProtocol.Factory())
            .minWorkerThreads(conf.getIntVar(HiveConf.ConfVars.METASTORESERVERMINTHREADS))
            .maxWorkerThreads(conf.getIntVar(HiveConf.ConfVars.METASTORESERVERMAXTHREADS));
        System.err.println("sparkmaker metastore listening on " + args[0] + ":" + args[1]);
        new TThreadPoolServer(serverArgs).serve();
    }
}
