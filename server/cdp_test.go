package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is Debian's headless Chromium driven over the DevTools protocol
// through a pipe (--remote-debugging-pipe: commands on fd 3, answers on
// fd 4, each message ending in a NUL byte), so a test can ask the live page
// what --dump-dom cannot say: rendered sizes and the accessibility tree.
// No port is opened and nothing is downloaded.
type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   *os.File
	mu   sync.Mutex
	next int
	wait map[int]chan cdpReply
	dead chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func startBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{cmdR, resW}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	cmdR.Close()
	resW.Close()
	b := &browser{t: t, cmd: cmd, in: cmdW, wait: map[int]chan cdpReply{}, dead: make(chan struct{})}
	go func() {
		defer close(b.dead)
		rd := bufio.NewReader(resR)
		for {
			msg, err := rd.ReadBytes(0)
			if err != nil {
				return
			}
			var m struct {
				ID int `json:"id"`
				cdpReply
			}
			if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
				continue // an event
			}
			b.mu.Lock()
			ch := b.wait[m.ID]
			delete(b.wait, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
		}
	}()
	t.Cleanup(func() {
		cmdW.Close() // Chromium exits when its pipe closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		resR.Close()
	})
	return b
}

// call sends one command (to the page when session is set) and returns its
// result.
func (b *browser) call(session, method string, params any, result any) {
	b.t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.wait[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if _, err := b.in.Write(append(raw, 0)); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			b.t.Fatalf("%s: %s", method, r.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(r.Result, result); err != nil {
				b.t.Fatalf("%s: %v in %s", method, err, r.Result)
			}
		}
	case <-b.dead:
		b.t.Fatalf("%s: Chromium went away", method)
	case <-time.After(60 * time.Second):
		b.t.Fatalf("%s: no answer in 60 s", method)
	}
}

// open loads url in a new tab, with or without the page's scripts, and
// returns the tab's session.
func (b *browser) open(url string, scripts bool) string {
	b.t.Helper()
	var target struct{ TargetID string }
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	if !scripts {
		b.call(att.SessionID, "Emulation.setScriptExecutionDisabled", map[string]any{"value": true}, nil)
	}
	b.call(att.SessionID, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}, nil)
	b.call(att.SessionID, "Page.navigate", map[string]any{"url": url}, nil)
	return att.SessionID
}

// eval runs expr in the page (a promise is awaited) and decodes its
// JSON-string result into out.
func (b *browser) eval(session, expr string, out any) {
	b.t.Helper()
	var r struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.call(session, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		b.t.Fatalf("evaluating in the page: %s %s", r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	if err := json.Unmarshal([]byte(r.Result.Value), out); err != nil {
		b.t.Fatalf("page answered %q: %v", r.Result.Value, err)
	}
}

// waitFor polls the page until cond (a JavaScript expression) is true, or
// fails after a generous deadline.
func (b *browser) waitFor(session, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var ok bool
		b.eval(session, fmt.Sprintf("JSON.stringify(!!(document.readyState === 'complete' && (%s)))", cond), &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var html string
			b.eval(session, "JSON.stringify(document.documentElement.outerHTML)", &html)
			b.t.Fatalf("the page never got to %s:\n%s", cond, html)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
