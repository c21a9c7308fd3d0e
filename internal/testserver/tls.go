package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority a test makes with crypto/x509, and the
// PEM files it issues into its directory.
type CA struct {
	Dir    string
	File   string // the CA certificate, PEM
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	t      testing.TB
	serial int64
}

// KeyPair names the PEM files of an issued certificate and its key.
type KeyPair struct {
	CertFile, KeyFile string
}

// NewCA makes a self-signed CA named name, its files in a new directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Dir: t.TempDir(), cert: cert, key: key, t: t, serial: 1}
	ca.File = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *CA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.Dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// Server issues a server certificate for the given DNS names and IP
// addresses, named file prefix name.
func (ca *CA) Server(name string, hosts ...string) KeyPair {
	return ca.issue(name, x509.ExtKeyUsageServerAuth, hosts)
}

// Client issues a client certificate with common name name.
func (ca *CA) Client(name string) KeyPair {
	return ca.issue(name, x509.ExtKeyUsageClientAuth, nil)
}

func (ca *CA) issue(name string, usage x509.ExtKeyUsage, hosts []string) KeyPair {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kp := KeyPair{CertFile: ca.write(name+".pem", "CERTIFICATE", der), KeyFile: ca.write(name+"-key.pem", "PRIVATE KEY", kder)}
	if err := os.Chmod(kp.KeyFile, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return kp
}

// ClientConfig is a tls.Config that trusts ca and presents client (if any).
func (ca *CA) ClientConfig(client *KeyPair, serverName string) *tls.Config {
	ca.t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if client != nil {
		c, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
		if err != nil {
			ca.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// RedisTLS is how a TLS-only redis-server is started.
type RedisTLS struct {
	CA     *CA     // signs the server's certificate, and trusted for clients
	Server KeyPair // the server's certificate
	// Mutual requires client certificates signed by CA (tls-auth-clients).
	Mutual bool
	// Admin is the certificate the test's own Admin client presents.
	Admin *KeyPair
}

// StartRedisTLS starts a redis-server that listens only on a TLS port,
// Addr/Port, configured by o. Its Admin client speaks TLS.
func StartRedisTLS(t testing.TB, o RedisTLS, extra ...string) *Redis {
	t.Helper()
	r := &Redis{bin: LookPath(t, "redis-server"), dir: t.TempDir(), t: t}
	r.Port = FreePort(t)
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	auth := "no"
	if o.Mutual {
		auth = "yes"
	}
	r.extra = append([]string{"--port", "0", "--tls-port", strconv.Itoa(r.Port),
		"--tls-cert-file", o.Server.CertFile, "--tls-key-file", o.Server.KeyFile,
		"--tls-ca-cert-file", o.CA.File, "--tls-auth-clients", auth}, extra...)
	r.tls = o.CA.ClientConfig(o.Admin, "127.0.0.1")
	if err := r.start(); err != nil {
		t.Fatalf("start redis-server with TLS: %v", err)
	}
	r.Admin = r.client()
	t.Cleanup(func() {
		r.Admin.Close()
		r.Stop()
	})
	return r
}

// RestartTLS restarts the server with other certificates, same port.
func (r *Redis) RestartTLS(o RedisTLS) {
	r.t.Helper()
	r.Stop()
	auth := "no"
	if o.Mutual {
		auth = "yes"
	}
	for i := 0; i+1 < len(r.extra); i++ {
		switch r.extra[i] {
		case "--tls-cert-file":
			r.extra[i+1] = o.Server.CertFile
		case "--tls-key-file":
			r.extra[i+1] = o.Server.KeyFile
		case "--tls-ca-cert-file":
			r.extra[i+1] = o.CA.File
		case "--tls-auth-clients":
			r.extra[i+1] = auth
		}
	}
	r.tls = o.CA.ClientConfig(o.Admin, "127.0.0.1")
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server with TLS: %v", err)
	}
	r.Admin.Close()
	r.Admin = r.client()
}

// EnableTLS turns on ssl with server's certificate and, for client
// certificates, ca; every TCP login then needs TLS, and a client
// certificate signed by ca when clientCert is set. The server restarts.
func (p *Postgres) EnableTLS(t testing.TB, ca *CA, server KeyPair, clientCert bool) {
	t.Helper()
	copyOwned := func(src, name string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(p.DataDir, name)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if p.cred != nil {
			if err := os.Chown(dst, p.uid, p.gid); err != nil {
				t.Fatal(err)
			}
		}
		return dst
	}
	conf := strings.Join([]string{
		"ssl = on",
		"ssl_cert_file = '" + copyOwned(server.CertFile, "server.crt") + "'",
		"ssl_key_file = '" + copyOwned(server.KeyFile, "server.key") + "'",
		"ssl_ca_file = '" + copyOwned(ca.File, "root.crt") + "'",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rule := "hostssl all all 127.0.0.1/32 scram-sha-256"
	if clientCert {
		rule += " clientcert=verify-full"
	}
	hba := strings.Join([]string{
		"local all all trust",
		"hostssl all postgres 127.0.0.1/32 trust",
		rule,
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	if p.cred != nil {
		if err := os.Chown(filepath.Join(p.DataDir, "pg_hba.conf"), p.uid, p.gid); err != nil {
			t.Fatal(err)
		}
	}
	p.Restart()
}
