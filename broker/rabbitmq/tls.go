package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/tlsfiles"
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
	files := newFiles(o)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		// Verified in VerifyConnection, against the CA file as it is now.
		InsecureSkipVerify: true, //nolint:gosec // verified below unless the user opted out
		VerifyConnection: func(cs tls.ConnectionState) error {
			if o.InsecureSkipVerify {
				return nil
			}
			roots, _, err := files.Load()
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
			_, cert, err := files.Load()
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

// CheckTLSFiles reads the files once, so that a wrong path fails at start-up
// rather than at the first scrape.
func CheckTLSFiles(o TLSOptions) error {
	_, _, err := newFiles(o).Read()
	return err
}

func newFiles(o TLSOptions) *tlsfiles.Files {
	return &tlsfiles.Files{Flag: "--rabbitmq", CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile}
}
