package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// FsName is the source name of the mount; its type is fuse.indexwire.
const FsName = "indexwire"

// Mounted is a running overlay mount.
type Mounted struct {
	cfg    Config
	server *fuse.Server
	ov     *overlay
	rootFd int // the backing directory in place mode, else -1
	done   chan struct{}
	mu     sync.Mutex
}

// Mount mounts the overlay described by cfg and serves it until Unmount, an
// external unmount, or ctx is cancelled (which unmounts).
func Mount(ctx context.Context, cfg Config) (*Mounted, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if err := clearStale(cfg.Mountpoint, log); err != nil {
		return nil, err
	}
	st, err := os.Stat(cfg.Mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mountpoint %s is not a directory", cfg.Mountpoint)
	}
	m := &Mounted{cfg: cfg, rootFd: -1, done: make(chan struct{})}
	rootPath := cfg.Backing
	if cfg.InPlace() {
		fd, err := unix.Open(cfg.Mountpoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s for in-place mount: %w", cfg.Mountpoint, err)
		}
		m.rootFd = fd
		// The magic link resolves to the directory below the mount.
		rootPath = fmt.Sprintf("/proc/self/fd/%d", fd)
	} else if empty, err := dirEmpty(cfg.Mountpoint); err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	} else if !empty {
		return nil, fmt.Errorf("mountpoint %s is not empty; mount in place (no backing dir) to serve its own contents", cfg.Mountpoint)
	}
	var rst syscall.Stat_t
	if err := syscall.Stat(rootPath, &rst); err != nil {
		m.closeRoot()
		return nil, fmt.Errorf("stat backing %s: %w", rootPath, err)
	}
	root := &gofs.LoopbackRoot{Path: rootPath, Dev: uint64(rst.Dev)}
	m.ov = &overlay{root: root, rootPath: rootPath, sink: cfg.Sink, log: log, noOpen: cfg.NoOpen}
	rootNode := &node{LoopbackNode: &gofs.LoopbackNode{RootData: root}, ov: m.ov}
	root.RootNode = rootNode

	timeout := cfg.CacheTimeout
	opts := &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			AllowOther:    true,
			Options:       []string{"default_permissions"},
			DisableXAttrs: true,
			EnableLocks:   false,
			FsName:        FsName,
			Name:          FsName,
			Debug:         cfg.Debug,
			DirectMount:   os.Geteuid() == 0,
			// Without it (AUTO_INVAL_DATA) the kernel drops a hooked
			// file's whole page cache whenever a GETATTR shows a new
			// mtime, i.e. at the first stat after every index write, and
			// Cyrus's next command READs the index again through the
			// daemon. Every change comes through the mount, so the cache
			// is never stale. One READ fewer per command (more with a
			// large index).
			ExplicitDataCacheControl: true,
		},
	}

	if cfg.NoPassthrough || cfg.NoOpen {
		opts.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	srv, err := gofs.Mount(cfg.Mountpoint, rootNode, opts)
	if err != nil {
		m.closeRoot()
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	if cfg.NoOpen && srv.KernelSettings().Flags64()&fuse.CAP_NO_OPEN_SUPPORT == 0 {
		// An old kernel would fail every open with ENOSYS.
		if err := srv.Unmount(); err != nil {
			log.Error("unmount after refusing no-open", zap.String("mountpoint", cfg.Mountpoint), zap.Error(err))
		}
		m.closeRoot()
		return nil, fmt.Errorf("mount %s: no-open: the kernel does not offer FUSE_NO_OPEN_SUPPORT; mount without it", cfg.Mountpoint)
	}
	m.server = srv
	log.Info("mounted", zap.String("mountpoint", cfg.Mountpoint), zap.String("backing", cfg.Backing), zap.Bool("in_place", cfg.InPlace()),
		zap.Bool("no_open", cfg.NoOpen))
	go func() {
		srv.Wait()
		m.ov.bare.closeAll()
		m.closeRoot()
		close(m.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			if err := m.Unmount(); err != nil {
				log.Error("unmount on shutdown", zap.String("mountpoint", cfg.Mountpoint), zap.Error(err))
			}
		case <-m.done:
		}
	}()
	return m, nil
}

// Stats returns the mount's counters.
func (m *Mounted) Stats() Stats {
	s := &m.ov.stats
	return Stats{Opens: s.opens.Load(), HookedOpens: s.hookedOpens.Load(), Writes: s.writes.Load(), Batches: s.batches.Load(), Failures: s.failures.Load(),
		CommitTime: time.Duration(s.commitNanos.Load()), FsyncTime: time.Duration(s.fsyncNanos.Load())}
}

// Mountpoint is where the overlay is mounted.
func (m *Mounted) Mountpoint() string { return m.cfg.Mountpoint }

// Wait blocks until the file system is unmounted and served its last request.
func (m *Mounted) Wait() { <-m.done }

// Done is closed when the file system has stopped.
func (m *Mounted) Done() <-chan struct{} { return m.done }

// Unmount unmounts, retrying while the mount is busy, and falls back to a
// lazy detach: the daemon then serves open descriptors until they close.
func (m *Mounted) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	var err error
	for try := 0; try < 2; try++ {
		if err = m.server.Unmount(); err == nil {
			return nil
		}
		select {
		case <-m.done: // unmounted from outside meanwhile
			return nil
		case <-time.After(time.Duration(try+1) * 100 * time.Millisecond):
		}
	}
	m.cfg.Logger.Warn("mount busy, detaching lazily", zap.String("mountpoint", m.cfg.Mountpoint), zap.Error(err))
	if derr := detach(m.cfg.Mountpoint); derr != nil {
		return fmt.Errorf("unmount %s: %w (lazy detach: %v)", m.cfg.Mountpoint, err, derr)
	}
	return nil
}

func (m *Mounted) closeRoot() {
	if m.rootFd >= 0 {
		unix.Close(m.rootFd)
		m.rootFd = -1
	}
}

// detach lazily unmounts mp.
func detach(mp string) error {
	if os.Geteuid() == 0 {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("umount2 %s MNT_DETACH: %w", mp, err)
		}
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mp).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z %s: %w: %s", mp, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// clearStale detaches a dead FUSE mount left on mp by a crashed daemon, and
// refuses to mount over a live indexwire mount.
func clearStale(mp string, log *zap.Logger) error {
	fstype, mounted, err := mountAt(mp)
	if err != nil {
		return err
	}
	// STATFS always reaches the daemon; a stat may be answered from the
	// kernel's attribute cache even after the daemon died.
	var sfs unix.Statfs_t
	var st unix.Stat_t
	serr := unix.Statfs(mp, &sfs)
	if serr == nil {
		serr = unix.Stat(mp, &st)
	}
	dead := errors.Is(serr, unix.ENOTCONN) || errors.Is(serr, unix.ECONNABORTED)
	switch {
	case dead:
		log.Warn("stale FUSE mount found (its daemon died; processes that had files open there must be restarted); detaching it",
			zap.String("mountpoint", mp), zap.String("fstype", fstype))
		if err := detach(mp); err != nil {
			return fmt.Errorf("clear stale mount: %w", err)
		}
		return nil
	case mounted && fstype == "fuse."+FsName:
		return fmt.Errorf("%s is already mounted by a running indexwire", mp)
	}
	return nil
}

// mountAt reports whether something is mounted exactly at mp, and its type.
func mountAt(mp string) (fstype string, ok bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMount(fields[4]) != mp {
			continue
		}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				fstype, ok = fields[i+1], true
			}
		}
	}
	return fstype, ok, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dirEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}
