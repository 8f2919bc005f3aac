// Validates a certificate chain the way a Java relying party does: PKIX with revocation checking
// of the whole chain (leaf and issuing CA) by the JDK's own machinery, fetching CRLs from each
// certificate's CRL distribution point and asking the OCSP responder named in its AIA.
//
// usage: java -Dcom.sun.security.enableCRLDP=true PkixCheck.java ROOT.pem ISSUING.pem LEAF.pem [--no-ocsp]
// Prints "good" (exit 0), "revoked: <detail>" (exit 2), or "failed: <reason>" (exit 1).
import java.io.FileInputStream;
import java.security.Security;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.Set;

public class PkixCheck {
    static X509Certificate load(CertificateFactory cf, String file) throws Exception {
        try (FileInputStream in = new FileInputStream(file)) {
            return (X509Certificate) cf.generateCertificate(in);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: PkixCheck ROOT.pem ISSUING.pem LEAF.pem [--no-ocsp]");
            System.exit(64);
        }
        final boolean ocsp = !(args.length > 3 && args[3].equals("--no-ocsp"));
        if (!"true".equals(System.getProperty("com.sun.security.enableCRLDP"))) {
            System.out.println("failed: run with -Dcom.sun.security.enableCRLDP=true (CRLs from distribution points)");
            System.exit(1);
        }
        // OCSP first, CRLs when a certificate names no responder (the issuing CA): the JDK's default.
        Security.setProperty("ocsp.enable", ocsp ? "true" : "false");

        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        X509Certificate root = load(cf, args[0]);
        X509Certificate issuing = load(cf, args[1]);
        X509Certificate leaf = load(cf, args[2]);
        CertPath path = cf.generateCertPath(List.of(leaf, issuing));
        PKIXParameters params = new PKIXParameters(Set.of(new TrustAnchor(root, null)));
        params.setRevocationEnabled(true);
        try {
            CertPathValidator.getInstance("PKIX").validate(path, params);
            System.out.println("good");
        } catch (CertPathValidatorException e) {
            if (e.getReason() == CertPathValidatorException.BasicReason.REVOKED) {
                System.out.println("revoked: certificate " + e.getIndex() + " of the path: " + e.getMessage());
                System.exit(2);
            }
            System.out.println("failed: " + e.getReason() + " at certificate " + e.getIndex() + ": " + e.getMessage());
            System.exit(1);
        }
    }
}
