package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	// The toolkit's own YAML package, so its types decode as in the server.
	yaml "go.yaml.in/yaml/v2"
)

// ProbeResult is what ProbeHealthy saw.
type ProbeResult struct {
	URL    string
	Status int
	// Note says why an answer other than 200 still proves the server is up.
	Note string
}

// ProbeHealthy GETs /-/healthy of the exporter running on this machine,
// found through the same web settings the server uses: the first listen
// address (an unspecified host means loopback) and, when --web.config.file
// enables TLS, https. It is the health check of images without curl.
//
// The probe holds no credentials, so where the web config demands them an
// answer that can only come from the running server counts: 401 under
// basic auth, and a TLS alert refusing the missing client certificate.
func ProbeHealthy(ctx context.Context, flags *web.FlagConfig) (ProbeResult, error) {
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		return ProbeResult{}, errors.New("--web.systemd-socket: the listening address is systemd's; probe it with an HTTP check of /-/healthy")
	}
	if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
		return ProbeResult{}, errors.New("--web.listen-address: no address")
	}
	addr := (*flags.WebListenAddresses)[0]
	if strings.HasPrefix(addr, "vsock://") {
		return ProbeResult{}, fmt.Errorf("--web.listen-address %s: vsock cannot be probed from inside", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ProbeResult{}, fmt.Errorf("--web.listen-address %s: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}

	var wc webConfig
	if path := *flags.WebConfigFile; path != "" {
		if wc, err = readWebConfig(path); err != nil {
			return ProbeResult{}, err
		}
	}
	scheme := "http"
	transport := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	if wc.tls {
		scheme = "https"
		// It checks that this machine's exporter answers, and sends nothing
		// secret: the certificate names the service, not the loopback
		// address the probe dials.
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec
	}
	u := scheme + "://" + net.JoinHostPort(host, port) + "/-/healthy"
	res := ProbeResult{URL: u}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return res, err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		if wc.clientCerts && strings.Contains(err.Error(), "remote error: tls:") {
			res.Note = "the server refused the TLS handshake for want of a client certificate, so it serves"
			return res, nil
		}
		return res, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	res.Status = resp.StatusCode
	switch {
	case resp.StatusCode == http.StatusOK:
		return res, nil
	case resp.StatusCode == http.StatusUnauthorized && wc.basicAuth:
		res.Note = "basic auth is on and the probe has no password; the 401 comes from the server, so it serves"
		return res, nil
	}
	return res, fmt.Errorf("%s answered %s", u, resp.Status)
}

type webConfig struct{ tls, clientCerts, basicAuth bool }

// readWebConfig reads what the probe needs of exporter-toolkit's web
// config, with the toolkit's own decoding of the TLS part.
func readWebConfig(path string) (webConfig, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return webConfig{}, fmt.Errorf("--web.config.file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return webConfig{}, fmt.Errorf("--web.config.file: %s is not a regular file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return webConfig{}, fmt.Errorf("--web.config.file: %w", err)
	}
	// The toolkit's defaults, as its getConfig sets them.
	c := web.Config{TLSConfig: web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return webConfig{}, fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	out := webConfig{basicAuth: len(c.Users) > 0}
	if cfg, err := web.ConfigToTLSConfig(&c.TLSConfig); err == nil {
		out.tls = true
		out.clientCerts = cfg.ClientAuth == tls.RequireAnyClientCert || cfg.ClientAuth == tls.RequireAndVerifyClientCert
	}
	return out, nil
}

// DefaultProbeTimeout bounds the healthcheck command.
const DefaultProbeTimeout = 5 * time.Second
