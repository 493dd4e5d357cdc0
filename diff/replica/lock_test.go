package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/indexwire/indexwire/diff"
)

const lockEnv = "INDEXWIRE_REPLICA_LOCK"

// TestLockHelper is not a test: run as a child process by cyrusLock, it
// takes a classic fcntl lock on a file as Cyrus does, says "locked" and
// holds it until its stdin closes. (It must be another process: closing any
// descriptor of a file drops the classic locks its process holds on it.)
func TestLockHelper(t *testing.T) {
	spec := os.Getenv(lockEnv)
	if spec == "" {
		t.Skip("helper process for TestLocksExcludeCyrus")
	}
	path, typ, _ := strings.Cut(spec, "\n")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if typ == "r" {
		lk.Type = unix.F_RDLCK
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
}

// cyrusLock holds a classic fcntl lock (typ "r" or "w") on path in another
// process, the way Cyrus does, until the returned function is called.
func cyrusLock(t *testing.T, path, typ string) func() {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockEnv+"="+path+"\n"+typ)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		in.Close()
		cmd.Wait()
		t.Fatalf("lock helper: %q %v", line, err)
	}
	release := func() {
		in.Close()
		cmd.Wait()
	}
	t.Cleanup(release)
	return release
}

// TestLocksExcludeCyrus: while "Cyrus" holds the index lock, or the
// mailbox lock exclusive (repack), the applier waits; it proceeds once the
// lock is released, and a cancelled context ends the wait.
func TestLocksExcludeCyrus(t *testing.T) {
	s := newSynthSpool(t)
	const id = "lock0123456789"
	dir := s.addMailbox(t, uuidRel(id), id, 5)
	if err := os.MkdirAll(filepath.Join(s.confDir, "lock"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, _ := s.applier(t)
	for i, held := range []struct {
		path string
		typ  string
	}{
		{filepath.Join(dir, "cyrus.index"), "w"},
		{filepath.Join(dir, "cyrus.index"), "r"},
		{filepath.Join(s.confDir, "lock", id+".lock"), "w"},
	} {
		release := cyrusLock(t, held.path, held.typ)
		b := flagBatch(id, 0, uint64(10+2*i), []uint32{1}, diff.FlagSeen)
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		_, err := a.Apply(ctx, b)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s held (%s): apply returned %v, want it to wait", held.path, held.typ, err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := a.Apply(context.Background(), b)
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("apply finished (%v) while %s is locked", err, held.path)
		case <-time.After(50 * time.Millisecond):
		}
		release()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("apply still waiting after the lock was released")
		}
		ix, mh, _ := loadMailbox(t, dir)
		if err := diff.Check(dir, ix, mh.UserFlags); err != nil || ix.Records[0].ModSeq != uint64(11+2*i) {
			t.Fatalf("after apply: %v, uid 1 modseq %d", err, ix.Records[0].ModSeq)
		}
	}
	// A shared mailbox lock (a Cyrus reader) does not block the applier.
	cyrusLock(t, filepath.Join(s.confDir, "lock", id+".lock"), "r")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.Apply(ctx, flagBatch(id, 0, 100, []uint32{2}, diff.FlagSeen)); err != nil {
		t.Fatalf("shared mailbox lock held: %v", err)
	}
}
