package kube

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The rendered Deployment, run as the kubelet would run it: its args, its
// config file and its credentials from the chart's Secret, against a
// password-protected Redis. Its probes and its ServiceMonitor's path answer
// on its container port, and the credentials reached Redis.
func TestRenderedDeploymentServes(t *testing.T) {
	const password = "s3cret-chart"
	redis := testserver.StartRedis(t, "--requirepass", password)
	port := testserver.FreePort(t)
	r := render(t, nil,
		"containerPort="+strconv.Itoa(port),
		"credentials.create=true",
		"credentials.redisURL=redis://"+redis.Addr+"/0",
		"credentials.redisPassword="+password,
		"serviceMonitor.enabled=true",
	)
	checkDeployment(t, r)
	dep := r.deployments[0]
	c := exporterContainer(t, dep)

	// Volumes: the ConfigMap's files go to a directory standing in for
	// its mount path.
	dir := t.TempDir()
	cm := configMapNamed(t, r, "")
	var mount string
	for _, m := range c.VolumeMounts {
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				mount = m.MountPath
			}
		}
	}
	for name, data := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var args []string
	for _, a := range c.Args {
		if mount != "" {
			a = strings.ReplaceAll(a, mount, dir)
		}
		// Loopback only in tests; the port is the rendered one.
		a = strings.Replace(a, "--web.listen-address=:", "--web.listen-address=127.0.0.1:", 1)
		args = append(args, a)
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	sec := one(t, "Secret", r.secrets)
	for _, e := range c.Env {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			if v, ok := sec.StringData[ref.SecretKeyRef.Key]; ok {
				env = append(env, e.Name+"="+v)
			}
		} else {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	cmd := exec.Command(exporterBin, args...)
	cmd.Env = env
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("exporter %v:\n%s", args, logs)
		}
	})

	base := "http://127.0.0.1:" + strconv.Itoa(int(c.Ports[0].ContainerPort))
	get := func(path string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// Wait while the exporter starts (no answer yet) or says it is not
	// ready (503); any other answer is final.
	ready := c.ReadinessProbe.HTTPGet.Path
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := get(ready)
		if code == http.StatusOK {
			break
		}
		if (code != 0 && code != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			t.Fatalf("readiness probe %s: %d %s", ready, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(c.LivenessProbe.HTTPGet.Path); code != http.StatusOK {
		t.Errorf("liveness probe %s: %d %s", c.LivenessProbe.HTTPGet.Path, code, body)
	}
	path := r.serviceMonitor[0].Spec.Endpoints[0].Path
	if code, body := get(path); code != http.StatusOK || !regexp.MustCompile(`(?m)^dramatiq_redis_up(\{[^}]*\})? 1$`).MatchString(body) {
		t.Errorf("GET %s (the ServiceMonitor's path): %d; the credentials from the Secret did not reach Redis:\n%.2000s", path, code, body)
	}
}
