package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/indexwire/indexwire/tests/pair"
)

// mountProc is one `indexwire mount --backing B M` daemon, a child process.
type mountProc struct {
	cmd     *exec.Cmd
	mnt     string
	metrics string // 127.0.0.1:port of its Prometheus endpoint
	done    chan error
}

// startMount mounts backing on mnt with the indexwire binary and waits
// until the mount shows in mountinfo. extra are more mount flags.
func startMount(bin, backing, mnt string, log io.Writer, extra ...string) (*mountProc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	args := append([]string{"mount", "--backing", backing, "--metrics-addr", addr, "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin, append(args, mnt)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mount on %s: %w", mnt, err)
	}
	m := &mountProc{cmd: cmd, mnt: mnt, metrics: addr, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for !pair.IsMounted(mnt) {
		select {
		case err := <-m.done:
			return nil, fmt.Errorf("mount on %s exited: %v", mnt, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("overlay not mounted on %s after 15s", mnt)
		}
	}
	return m, nil
}

// stop sends SIGTERM (the daemon unmounts), then SIGKILL after 15 s, and
// detaches a mount left behind.
func (m *mountProc) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
	}
	if pair.IsMounted(m.mnt) {
		_ = exec.Command("fusermount3", "-u", "-z", m.mnt).Run()
	}
}

// counter reads one indexwire_<name> counter from the daemon's /metrics.
func (m *mountProc) counter(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+m.metrics+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "indexwire_"+name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("metric indexwire_%s not found at %s", name, m.metrics)
}
