package rabbitmq

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults for Options' limits.
const (
	// DefaultMaxResponseBytes bounds the answer read: about 200 bytes per
	// RabbitMQ queue with the reader's columns, so 16 MiB is some 80,000
	// RabbitMQ queues (26,000 Dramatiq queues).
	DefaultMaxResponseBytes = 16 << 20
	// DefaultMaxQueues bounds the RabbitMQ queues of one answer.
	DefaultMaxQueues = 100_000
	// DefaultTimeout bounds a read whose context has no deadline.
	DefaultTimeout = 10 * time.Second

	maxPasswordFileBytes = 4096
	maxErrorBody         = 1024
	maxErrorText         = 300
)

// Options configure a Reader.
type Options struct {
	// URL is the management API's base URL, without credentials, e.g.
	// http://127.0.0.1:15672 (a path prefix, if the API has one, is kept).
	URL string
	// User and Password authenticate with HTTP basic auth. PasswordFile,
	// when set, is read at every Read (so a rotated secret is picked up)
	// and wins over Password; a trailing newline is dropped.
	User, Password, PasswordFile string
	// Vhost is the virtual host whose queues are read ("" means "/").
	Vhost string
	// TLS applies to https:// URLs.
	TLS TLSOptions
	// MaxResponseBytes and MaxQueues bound one answer; beyond either, the
	// read fails. Zero: the defaults.
	MaxResponseBytes int64
	MaxQueues        int
	// Timeout bounds a read whose context has no earlier deadline.
	Timeout time.Duration
	// Dial, when set, makes every connection (a /probe target's dialer,
	// which admits only allowed addresses).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Reader reads one vhost. It is safe for concurrent use.
type Reader struct {
	o       Options
	queues  string // the request URL
	display string // what errors name: the path, escaped
	client  *http.Client
}

// New checks o and builds a Reader. It does not connect: the exporter must
// start while RabbitMQ is down, and report it.
func New(o Options) (*Reader, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq URL: %w", urlErrorCause(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("rabbitmq URL: scheme must be http or https, not %q", clip(u.Scheme, 16))
	}
	if u.User != nil {
		return nil, errors.New("rabbitmq URL: must not carry credentials (use the user and password options)")
	}
	if u.Host == "" {
		return nil, errors.New("rabbitmq URL: no host")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("rabbitmq URL: must have no query or fragment")
	}
	if o.Vhost == "" {
		o.Vhost = "/"
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.MaxQueues <= 0 {
		o.MaxQueues = DefaultMaxQueues
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	tlsCfg, err := o.TLS.config(u.Hostname())
	if err != nil {
		return nil, err
	}
	if u.Scheme == "https" {
		if err := CheckTLSFiles(o.TLS); err != nil {
			return nil, err
		}
	}
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	path := "/api/queues/" + url.PathEscape(o.Vhost)
	r := &Reader{
		o:       o,
		queues:  base + path + "?columns=" + url.QueryEscape(columns),
		display: path,
	}
	tr := &http.Transport{
		// The management API is an internal endpoint; a proxy from the
		// environment would see the credentials.
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    o.Timeout,
		MaxIdleConns:           2,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      false,
	}
	if o.Dial != nil {
		tr.DialContext = o.Dial
	}
	r.client = &http.Client{
		Transport: tr,
		// Never follow a redirect: it could take the Authorization header
		// (or the scrape) to another host. A 3xx is an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return r, nil
}

// Close releases idle connections.
func (r *Reader) Close() { r.client.CloseIdleConnections() }

// Vhost is the vhost read.
func (r *Reader) Vhost() string { return r.o.Vhost }

func (r *Reader) password() (string, error) {
	if r.o.PasswordFile == "" {
		return r.o.Password, nil
	}
	f, err := os.Open(r.o.PasswordFile)
	if err != nil {
		// The path is the user's own setting, not a secret.
		return "", fmt.Errorf("rabbitmq password file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("rabbitmq password file: %w", err)
	}
	if len(b) > maxPasswordFileBytes {
		return "", fmt.Errorf("rabbitmq password file %s: longer than %d bytes", r.o.PasswordFile, maxPasswordFileBytes)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Read lists the vhost's queues in one GET and folds them. Any failure
// (network, status, size, shape) is an error and no snapshot: never zeros.
func (r *Reader) Read(ctx context.Context) (*Snapshot, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.o.Timeout)
		defer cancel()
	}
	pw, err := r.password()
	if err != nil {
		return nil, err
	}
	s, err := r.read(ctx, pw)
	if err != nil {
		return nil, &Error{msg: scrub(err.Error(), r.o.User, pw), cause: err}
	}
	return s, nil
}

func (r *Reader) read(ctx context.Context, pw string) (*Snapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.queues, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", r.display, urlErrorCause(err))
	}
	req.SetBasicAuth(r.o.User, pw)
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", r.display, urlErrorCause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, r.statusError(resp)
	}
	cr := &countingReader{r: io.LimitReader(resp.Body, r.o.MaxResponseBytes+1)}
	queues, total, anomalies, err := decodeQueues(cr, r.o.MaxQueues)
	if cr.n > r.o.MaxResponseBytes {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes (raise the limit)", r.display, r.o.MaxResponseBytes)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: reading the answer: %w", r.display, ctx.Err())
		}
		return nil, fmt.Errorf("GET %s: %w", r.display, err)
	}
	s := &Snapshot{Vhost: r.o.Vhost, RabbitMQQueues: total, Anomalies: anomalies, ResponseBytes: cr.n}
	s.Queues, s.Ignored = fold(queues)
	return s, nil
}

// statusError names the status and RabbitMQ's own reason, and what to do
// about the common ones.
func (r *Reader) statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}
	reason := ""
	if json.Unmarshal(body, &e) == nil && (e.Error != "" || e.Reason != "") {
		reason = clip(e.Error, 60)
		if e.Reason != "" {
			reason += ": " + clip(e.Reason, 160)
		}
	}
	msg := fmt.Sprintf("GET %s: %s", r.display, clip(resp.Status, 60))
	if reason != "" {
		msg += " (" + reason + ")"
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && strings.Contains(e.Reason, "virtual host"):
		msg += fmt.Sprintf("; user %q needs a permission entry on vhost %q (empty patterns are enough with the monitoring tag)", clip(r.o.User, 60), clip(r.o.Vhost, 60))
	case resp.StatusCode == http.StatusUnauthorized && strings.Contains(e.Reason, "management user"):
		msg += fmt.Sprintf("; user %q needs the monitoring tag", clip(r.o.User, 60))
	case resp.StatusCode == http.StatusUnauthorized:
		msg += "; check the user and password"
	case resp.StatusCode == http.StatusNotFound:
		msg += fmt.Sprintf("; no vhost %q, or the URL is not the management API's", clip(r.o.Vhost, 60))
	case resp.StatusCode/100 == 3:
		msg += "; redirects are not followed (set the URL the API answers on)"
	}
	return errors.New(msg)
}

// Error is a failed read. Its text names what failed and never holds the
// password or the Authorization header, even when a peer echoes them.
type Error struct {
	msg   string
	cause error
}

func (e *Error) Error() string { return e.msg }

// Unwrap gives the cause for errors.Is (context.DeadlineExceeded, ...); its
// own text is not scrubbed: log Error(), not the cause.
func (e *Error) Unwrap() error { return e.cause }

// scrub removes the secret and its encodings from s and bounds it.
func scrub(s, user, pw string) string {
	if pw != "" {
		for _, secret := range []string{
			base64.StdEncoding.EncodeToString([]byte(user + ":" + pw)),
			base64.StdEncoding.EncodeToString([]byte(":" + pw)),
			url.QueryEscape(pw), url.PathEscape(pw), pw,
		} {
			if len(secret) >= 1 {
				s = strings.ReplaceAll(s, secret, "***")
			}
		}
	}
	return clip(s, maxErrorText)
}

// urlErrorCause keeps *url.Error's operation and cause; its URL is ours
// (no credentials), but the query makes lines long.
func urlErrorCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
