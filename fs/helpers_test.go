package fs

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/indexwire/indexwire/diff"
)

// needFUSE skips unless the test can mount: root and /dev/fuse.
func needFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// collector is a Sink that keeps every batch.
type collector struct {
	mu sync.Mutex
	bs []*diff.Batch
}

func (c *collector) Commit(_ context.Context, b *diff.Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bs = append(c.bs, b)
}

// take returns and forgets the batches received so far.
func (c *collector) take() []*diff.Batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	bs := c.bs
	c.bs = nil
	return bs
}

// waitFor waits up to 5 s until at least n batches arrived (a release is
// asynchronous to close), then takes them.
func (c *collector) waitFor(t testing.TB, n int) []*diff.Batch {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		k := len(c.bs)
		c.mu.Unlock()
		if k >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c.take()
}

type testMount struct {
	*Mounted
	backing, mnt string
	sink         *collector
	logs         *observer.ObservedLogs
}

// mountT mounts a fresh overlay over backing (a new temp dir if "") and
// unmounts it when the test ends.
func mountT(t testing.TB, backing string, mutate ...func(*Config)) *testMount {
	t.Helper()
	needFUSE(t)
	if backing == "" {
		backing = t.TempDir()
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	tm := &testMount{backing: backing, mnt: mnt, sink: &collector{}, logs: logs}
	cfg := Config{Backing: backing, Mountpoint: mnt, Sink: tm.sink, Logger: zap.New(core)}
	for _, f := range mutate {
		f(&cfg)
	}
	tm.mnt = cfg.Mountpoint
	m, err := Mount(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tm.Mounted = m
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		m.Wait()
	})
	return tm
}

// noCaptureErrors fails the test if the overlay logged a failed commit.
func (tm *testMount) noCaptureErrors(t testing.TB) {
	t.Helper()
	for _, e := range tm.logs.FilterMessage("index commit not captured").All() {
		t.Errorf("capture error: %v", e.ContextMap())
	}
}

// copyFixture copies diff/testdata/<dir>/{cyrus.index,cyrus.header} into dst.
func copyFixture(t testing.TB, dir, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cyrus.index", "cyrus.header"} {
		b, err := os.ReadFile(filepath.Join("..", "diff", "testdata", dir, f))
		if err != nil {
			t.Skipf("fixture %s/%s: %v", dir, f, err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mountChildT mounts a fresh overlay (Backing a temp dir) served by a child
// process, so this process can use the mount like any client, mappings
// included. The mount is removed when the test ends.
func mountChildT(t *testing.T) *testMount {
	t.Helper()
	needFUSE(t)
	backing := t.TempDir()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := helper(t, "mount", backing, mnt)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child mount: %q %v", line, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("child mount did not exit after unmount")
		}
	})
	return &testMount{backing: backing, mnt: mnt}
}
