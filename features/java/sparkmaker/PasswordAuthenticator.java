package sparkmaker;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Base64;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication: one user, its password checked against a salted
 * PBKDF2-HMAC-SHA256 hash (never the password itself) given in the environment:
 * SPARKMAKER_SQL_USER and SPARKMAKER_SQL_PASSWORD_HASH = "pbkdf2_sha256$iterations$salt$hash"
 * (salt and hash in base64). Without them every login is refused: the server fails closed.
 */
public class PasswordAuthenticator implements PasswdAuthenticationProvider {
    private final String user = System.getenv("SPARKMAKER_SQL_USER");
    private final String stored = System.getenv("SPARKMAKER_SQL_PASSWORD_HASH");

    @Override
    public void Authenticate(String name, String password) throws AuthenticationException {
        if (user == null || stored == null || name == null || password == null || !verify(name, password)) {
            throw new AuthenticationException("wrong user or password");
        }
    }

    private boolean verify(String name, String password) throws AuthenticationException {
        String[] parts = stored.split("\\$");
        if (parts.length != 4 || !parts[0].equals("pbkdf2_sha256")) {
            throw new AuthenticationException("the server's password hash is malformed");
        }
        try {
            int iterations = Integer.parseInt(parts[1]);
            byte[] salt = Base64.getDecoder().decode(parts[2]);
            byte[] expected = Base64.getDecoder().decode(parts[3]);
            PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), salt, iterations, expected.length * 8);
            byte[] actual = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
            // Both comparisons always run (no early exit on the user name).
            boolean sameUser = MessageDigest.isEqual(name.getBytes(StandardCharsets.UTF_8), user.getBytes(StandardCharsets.UTF_8));
            boolean samePassword = MessageDigest.isEqual(actual, expected);
            return sameUser & samePassword;
        } catch (Exception e) {
            throw new AuthenticationException("cannot check the password: " + e.getClass().getSimpleName());
        }
    }
}
