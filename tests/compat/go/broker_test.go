// Package compat runs franz-go (kgo, kadm) against a real broker: a fresh `rill serve`
// started by TestMain, or the address in KAFKA_BOOTSTRAP (then nothing is started).
package compat

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 30 * time.Second
	stopGrace    = 5 * time.Second
)

var (
	bootstrap string
	readyRe   = regexp.MustCompile(`^rill listening on (127\.0\.0\.1:\d+)\s*$`)
)

func TestMain(m *testing.M) {
	if ext := os.Getenv("KAFKA_BOOTSTRAP"); ext != "" {
		bootstrap = ext
		os.Exit(m.Run())
	}
	cmd, tmp, err := startRill()
	if err != nil {
		fmt.Fprintln(os.Stderr, "could not start rill:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopRill(cmd)
	if dir := os.Getenv("RILL_COMPAT_LOG_DIR"); dir != "" {
		if b, err := os.ReadFile(filepath.Join(tmp, "rill-stderr.log")); err == nil {
			os.WriteFile(filepath.Join(dir, "go-rill.log"), b, 0o644)
		}
	}
	os.RemoveAll(tmp)
	os.Exit(code)
}

func startRill() (*exec.Cmd, string, error) {
	cmd, tmp, addr, err := startRillWith()
	if err == nil {
		bootstrap = addr
	}
	return cmd, tmp, err
}

// startRillWith starts a `rill serve` on its own temp data dir with extra flags and returns
// the process, the temp dir and the address it listens on.
func startRillWith(extra ...string) (*exec.Cmd, string, string, error) {
	bin := os.Getenv("RILL_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "..", "target", "release", "rill")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, "", "", fmt.Errorf("rill binary not found at %s (build it or set RILL_BIN)", bin)
	}
	tmp, err := os.MkdirTemp("", "rill-compat-go-")
	if err != nil {
		return nil, "", "", err
	}
	data := filepath.Join(tmp, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, "", "", err
	}
	stderr, err := os.Create(filepath.Join(tmp, "rill-stderr.log"))
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", data}, extra...)...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		} else {
			lines <- "<eof>"
		}
		for sc.Scan() { // drain so the broker never blocks on stdout
		}
	}()
	select {
	case line := <-lines:
		if m := readyRe.FindStringSubmatch(line); m != nil {
			return cmd, tmp, m[1], nil
		}
		cmd.Process.Kill()
		return nil, "", "", fmt.Errorf("unexpected first line %q; stderr in %s", line, stderr.Name())
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		return nil, "", "", fmt.Errorf("no listening line within %s; stderr in %s", readyTimeout, stderr.Name())
	}
}

func stopRill(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopGrace):
		cmd.Process.Kill()
		<-done
	}
}
