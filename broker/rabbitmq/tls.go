package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// TLSOptions configure TLS to the management API (https:// URLs), with the
// same meaning as the Redis ones: the files are read again when they
// change on disk, at the next connection, so rotated certificates need no
// restart.
type TLSOptions struct {
	// CAFile holds the PEM certificates that may sign the server's
	// certificate. Empty: the system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate and key, for an API
	// that requires one. Both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry. Empty:
	// the URL's host.
	ServerName string
	// InsecureSkipVerify accepts any server certificate.
	InsecureSkipVerify bool
}

// config builds a tls.Config whose verification and client certificate
// come from the files as they are at each handshake.
func (o TLSOptions) config(host string) (*tls.Config, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("--rabbitmq.tls-cert-file and --rabbitmq.tls-key-file go together")
	}
	serverName := o.ServerName
	if serverName == "" {
		serverName = host
	}
	files := &tlsFiles{opts: o}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		// Verified in VerifyConnection, against the CA file as it is now.
		InsecureSkipVerify: true, //nolint:gosec // verified below unless the user opted out
		VerifyConnection: func(cs tls.ConnectionState) error {
			if o.InsecureSkipVerify {
				return nil
			}
			roots, _, err := files.load()
			if err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, DNSName: serverName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("server certificate not accepted: %w", err)
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			_, cert, err := files.load()
			if err != nil {
				return nil, err
			}
			if cert == nil {
				return &tls.Certificate{}, nil // none: the server decides
			}
			return cert, nil
		},
	}, nil
}

type tlsFiles struct {
	opts TLSOptions

	mu     sync.Mutex
	loaded bool
	stamp  string
	roots  *x509.CertPool
	cert   *tls.Certificate
}

func fileStamp(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano()), nil
}

func (f *tlsFiles) load() (*x509.CertPool, *tls.Certificate, error) {
	stamp := ""
	for _, p := range []struct{ flag, path string }{
		{"--rabbitmq.tls-ca-file", f.opts.CAFile}, {"--rabbitmq.tls-cert-file", f.opts.CertFile}, {"--rabbitmq.tls-key-file", f.opts.KeyFile},
	} {
		s, err := fileStamp(p.path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.flag, err)
		}
		stamp += s + ";"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loaded && stamp == f.stamp {
		return f.roots, f.cert, nil
	}
	roots, cert, err := readTLSFiles(f.opts)
	if err != nil {
		return nil, nil, err
	}
	f.loaded, f.stamp, f.roots, f.cert = true, stamp, roots, cert
	return roots, cert, nil
}

// readTLSFiles parses the files; its errors name the file, never the
// contents.
func readTLSFiles(o TLSOptions) (*x509.CertPool, *tls.Certificate, error) {
	var roots *x509.CertPool
	if o.CAFile == "" {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil, nil, fmt.Errorf("system certificate pool: %w", err)
		}
	} else {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--rabbitmq.tls-ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--rabbitmq.tls-ca-file: no PEM certificate in %s", o.CAFile)
		}
	}
	if o.CertFile == "" && o.KeyFile == "" {
		return roots, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--rabbitmq.tls-cert-file/--rabbitmq.tls-key-file: %w", err)
	}
	return roots, &cert, nil
}

// CheckTLSFiles reads the files once, so that a wrong path fails at start-up
// rather than at the first scrape.
func CheckTLSFiles(o TLSOptions) error {
	_, _, err := readTLSFiles(o)
	return err
}
