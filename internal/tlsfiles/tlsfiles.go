// Package tlsfiles reads the CA, certificate and key files of a TLS client
// (the Redis reader's and the RabbitMQ reader's) and reads them again when
// they change, so that rotated certificates are used without a restart.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
)

// Files caches the parsed files and reads them again when their size or
// modification time changes. A stat per dial is cheap next to a handshake.
type Files struct {
	// Flag is the flag prefix errors name ("--redis", "--rabbitmq"): the
	// operator sees which setting is wrong, never the file's contents.
	Flag                      string
	CAFile, CertFile, KeyFile string

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

// Load returns the roots (the system's when CAFile is empty) and the client
// certificate (nil when none is configured).
func (f *Files) Load() (*x509.CertPool, *tls.Certificate, error) {
	stamp := ""
	for _, p := range []struct{ flag, path string }{
		{f.Flag + ".tls-ca-file", f.CAFile}, {f.Flag + ".tls-cert-file", f.CertFile}, {f.Flag + ".tls-key-file", f.KeyFile},
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
	roots, cert, err := f.Read()
	if err != nil {
		return nil, nil, err
	}
	f.loaded, f.stamp, f.roots, f.cert = true, stamp, roots, cert
	return roots, cert, nil
}

// Read parses the files without caching. Its errors name the file and the
// problem, never the contents (a key file is a secret).
func (f *Files) Read() (*x509.CertPool, *tls.Certificate, error) {
	var roots *x509.CertPool
	if f.CAFile == "" {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil, nil, fmt.Errorf("system certificate pool: %w", err)
		}
	} else {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.tls-ca-file: %w", f.Flag, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("%s.tls-ca-file: no PEM certificate in %s", f.Flag, f.CAFile)
		}
	}
	if f.CertFile == "" && f.KeyFile == "" {
		return roots, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		// LoadX509KeyPair's errors name the file or the mismatch, not the
		// key's bytes.
		return nil, nil, fmt.Errorf("%s.tls-cert-file/%s.tls-key-file: %w", f.Flag, f.Flag, err)
	}
	return roots, &cert, nil
}
