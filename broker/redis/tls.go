package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/tlsfiles"
)

// TLSOptions configure TLS to Redis (rediss:// URLs). The files are read
// again whenever they change on disk, at the next connection, so rotated
// certificates are picked up without a restart.
type TLSOptions struct {
	// CAFile holds the PEM certificates that may sign the server's
	// certificate. Empty: the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and key, for servers
	// that require one (tls-auth-clients yes). Both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry. Empty: the
	// host the exporter dials (the URL's, or the address Sentinel names).
	ServerName string
	// InsecureSkipVerify accepts any server certificate. Encryption without
	// authentication: anyone on the path can read the traffic.
	InsecureSkipVerify bool
}

// tlsDialer dials TCP, then TLS, within the caller's context. go-redis's own
// TLS dial ignores the context and cannot reload files, hence our own.
type tlsDialer struct {
	opts  TLSOptions
	files *tlsfiles.Files
	net   net.Dialer
	// netDial replaces net.DialContext when set (ClientOptions.NetDial).
	netDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newTLSDialer(o TLSOptions, timeout time.Duration) *tlsDialer {
	return &tlsDialer{opts: o, files: newFiles(o), net: net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}}
}

func (d *tlsDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	roots, cert, err := d.files.Load()
	if err != nil {
		return nil, err
	}
	serverName := d.opts.ServerName
	if serverName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			serverName = host
		} else {
			serverName = addr
		}
	}
	dial := d.net.DialContext
	if d.netDial != nil {
		dial = d.netDial
	}
	conn, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		// The chain is verified in VerifyConnection below, against the CA
		// file as it is now: crypto/tls would only know the roots it was
		// given when the config was built.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection unless the user opted out
		VerifyConnection: func(cs tls.ConnectionState) error {
			if d.opts.InsecureSkipVerify {
				return nil
			}
			return verifyServer(cs, roots, serverName)
		},
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, DNSName: serverName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("server certificate not accepted: %w", err)
	}
	return nil
}

// CheckTLSFiles reads the files once, so that a wrong path fails at start-up
// rather than at the first scrape.
func CheckTLSFiles(o TLSOptions) error {
	_, _, err := newFiles(o).Read()
	return err
}

func newFiles(o TLSOptions) *tlsfiles.Files {
	return &tlsfiles.Files{Flag: "--redis", CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile}
}
