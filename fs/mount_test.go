package fs

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "mountpoint is required"},
		{Config{Mountpoint: dir, Backing: dir}, "equals the mountpoint"},
		{Config{Mountpoint: filepath.Join(dir, "x"), Backing: dir}, "inside backing"},
		{Config{Mountpoint: dir, Backing: filepath.Join(dir, "absent")}, "no such file"},
	} {
		err := c.cfg.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
	c := Config{Mountpoint: dir}
	if err := c.validate(); err != nil || c.CacheTimeout != DefaultCacheTimeout || c.Logger == nil || c.Sink == nil {
		t.Errorf("defaults not filled: %v %+v", err, c)
	}
}

func TestRefuseNonEmptyMountpoint(t *testing.T) {
	needFUSE(t)
	mnt := t.TempDir()
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Mount(context.Background(), Config{Backing: t.TempDir(), Mountpoint: mnt})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("mount over non-empty dir: %v", err)
	}
}

func TestInPlace(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	copyFixture(t, "v17", filepath.Join(dir, "m"))
	sink := &collector{}
	m, err := Mount(context.Background(), Config{Mountpoint: dir, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Unmount(); err != nil {
			t.Error(err)
		}
		m.Wait()
	}()
	if fstype, ok, _ := mountAt(dir); !ok || fstype != "fuse."+FsName {
		t.Fatalf("no indexwire mount at %s (%q)", dir, fstype)
	}
	mh := loadHeader(t, filepath.Join(dir, "m", "cyrus.header")) // read through the mount
	f, err := os.OpenFile(filepath.Join(dir, "m", "cyrus.index"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ix := cyrusCommit(t, f, mh.UserFlags, false, nil, setFlags(0x10, -1, 1, 2))
	f.Close()
	bs := sink.take()
	if len(bs) != 1 {
		t.Fatalf("%d batches, want 1", len(bs))
	}
	checkBatch(t, bs[0], mh, ix, 1, 2)
	if err := os.WriteFile(filepath.Join(dir, "m", "1."), []byte("msg"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m.Wait()
	if b, err := os.ReadFile(filepath.Join(dir, "m", "1.")); err != nil || string(b) != "msg" {
		t.Fatalf("file written through the in-place mount not in the directory: %v", err)
	}
}

// TestStaleMountCleared kills a mounting process with SIGKILL and checks
// that the next Mount detects the dead mount, says so, and mounts.
func TestStaleMountCleared(t *testing.T) {
	needFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "f"), []byte("x"), 0o644); err != nil {
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
	t.Cleanup(func() { detach(mnt) })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper mount: %q", line)
	}
	if _, err := os.Stat(filepath.Join(mnt, "f")); err != nil {
		t.Fatalf("helper mount not serving: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9, statfs gives %v, want ENOTCONN", err)
	}
	core, logs := observer.New(zap.InfoLevel)
	m, err := Mount(context.Background(), Config{Backing: backing, Mountpoint: mnt, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Unmount(); m.Wait() }()
	if logs.FilterMessageSnippet("stale FUSE mount").Len() != 1 {
		t.Errorf("no stale-mount message logged: %v", logs.All())
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "x" {
		t.Errorf("remount not serving: %v", err)
	}
	if _, err := Mount(context.Background(), Config{Backing: backing, Mountpoint: mnt}); err == nil || !strings.Contains(err.Error(), "already mounted") {
		t.Errorf("second mount over a live one: %v", err)
	}
}

// TestUnmountBusyDetaches: an open file keeps the mount busy; Unmount falls
// back to a lazy detach and the server exits once the file is closed.
func TestUnmountBusyDetaches(t *testing.T) {
	needFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	m, err := Mount(context.Background(), Config{Backing: backing, Mountpoint: mnt})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, "busy"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("unmount of busy mount: %v", err)
	}
	if _, ok, _ := mountAt(mnt); ok {
		t.Error("still in the mount table after unmount")
	}
	if _, err := f.Write([]byte("still served")); err != nil {
		t.Errorf("open file after lazy detach: %v", err)
	}
	f.Close()
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop after the last file closed")
	}
	if b, _ := os.ReadFile(filepath.Join(backing, "busy")); string(b) != "still served" {
		t.Errorf("backing has %q", b)
	}
}
