package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// selfSigned writes a certificate for "exporter.example" (not the loopback
// address the probe dials) and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exporter.example"},
		DNSNames: []string{"exporter.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// `healthcheck` probes the running exporter's /-/healthy through the same
// web settings as the server (listen address, TLS, basic auth, client
// certificates), answers while Redis is down, costs Redis nothing, and
// fails when nothing serves.
func TestHealthcheckCommand(t *testing.T) {
	r := testserver.StartRedis(t)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("probe-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tlsOnly := write(t, "tls.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", cert, key))
	tlsAuth := write(t, "tls-auth.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prom: %s\n", cert, key, hash))
	mtls := write(t, "mtls.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n", cert, key, cert))
	authOnly := write(t, "auth.yml", fmt.Sprintf("basic_auth_users:\n  prom: %s\n", hash))

	for _, tc := range []struct {
		name     string
		args     []string
		wantNote string
	}{
		{"plain", nil, ""},
		{"TLS", []string{"--web.config.file=" + tlsOnly}, ""},
		{"TLS and basic auth", []string{"--web.config.file=" + tlsAuth}, "basic auth"},
		{"basic auth", []string{"--web.config.file=" + authOnly}, "basic auth"},
		{"client certificates", []string{"--web.config.file=" + mtls}, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := testserver.FreePort(t)
			// The server listens on every address; the probe goes to loopback.
			listen := fmt.Sprintf("--web.listen-address=:%d", port)
			startExporterOn(t, port, []string{"REDIS_URL=" + r.URL()}, append([]string{listen}, tc.args...)...)
			stdout, stderr, code := runBinary(t, nil, append([]string{"healthcheck", listen}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s %s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, "/-/healthy") || !strings.Contains(stdout, tc.wantNote) {
				t.Errorf("stdout %q, want a note %q", stdout, tc.wantNote)
			}
		})
	}

	t.Run("Redis down, no Redis traffic", func(t *testing.T) {
		port := testserver.FreePort(t)
		listen := fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port)
		startExporterOn(t, port, []string{"REDIS_URL=" + r.URL()}, listen, "--dramatiq.discovery-interval=1h")
		waitDiscovered(t, fmt.Sprintf("http://127.0.0.1:%d", port))
		before := commandsProcessed(t, r)
		for i := 0; i < 5; i++ {
			if _, stderr, code := runBinary(t, []string{"REDIS_URL=" + r.URL()}, "healthcheck", listen); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
		}
		if n := commandsProcessed(t, r) - before - 1; n != 0 {
			t.Errorf("healthcheck sent %d commands to Redis", n)
		}
		r.Stop()
		defer r.Restart()
		if _, stderr, code := runBinary(t, nil, "healthcheck", listen); code != 0 {
			t.Errorf("with Redis down: exit %d: %s", code, stderr)
		}
	})

	t.Run("nothing serves", func(t *testing.T) {
		begin := time.Now()
		_, stderr, code := runBinary(t, nil, "healthcheck", fmt.Sprintf("--web.listen-address=127.0.0.1:%d", testserver.FreePort(t)))
		if code != 1 || !strings.Contains(stderr, "unhealthy") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("took %s", took)
		}
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, args := range [][]string{{"--web.listen-address=nonsense"}, {"--web.systemd-socket"}, {"--web.config.file=" + dir}} {
			if _, stderr, code := runBinary(t, nil, append([]string{"healthcheck"}, args...)...); code != 2 {
				t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
			}
		}
	})
}

// startExporterOn is startExporter for a server whose listen address and
// web config the caller sets; it waits until the port accepts.
func startExporterOn(t *testing.T, port int, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	logs := &testserver.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, scheme := range []string{"http", "https"} {
			if resp, err := client.Get(fmt.Sprintf("%s://127.0.0.1:%d/-/healthy", scheme, port)); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest { // plain HTTP to a TLS port
					return
				}
			} else if strings.Contains(err.Error(), "remote error: tls") {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("exporter exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
