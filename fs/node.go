package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// indexName is the file whose commits become batches.
const indexName = "cyrus.index"

// headerName is the mailbox header, read at every command and written only
// by renaming cyrus.header.NEW into place.
const headerName = "cyrus.header"

// isHookedName reports whether a file named name is served through the
// daemon (cached mode): cyrus.index, cyrus.index.NEW and anything else
// starting with "cyrus.index" (the names Cyrus renames onto cyrus.index),
// whose writes are captured; and cyrus.header*, whose writes are not
// captured but which is cheaper in cached mode: a passthrough read marks the
// FUSE inode's atime stale, so Cyrus's fstat at the next command costs a
// GETATTR round trip, while a cached read is served from the page cache
// kept across opens (one GETATTR fewer per command).
func isHookedName(name string) bool {
	return strings.HasPrefix(name, indexName) || strings.HasPrefix(name, headerName)
}

// node is every inode of the overlay: a loopback node whose opens are
// routed to a hooked or a passthrough handle.
type node struct {
	*gofs.LoopbackNode
	ov *overlay

	mu        sync.Mutex
	opens     int      // handles not yet released
	hooked    bool     // mode of the open handles; decided when opens == 0
	keepCache bool     // the page cache of this inode is only written through hooked handles
	cap       *capture // set while hooked handles are open; in no-open mode with fd
	fd        *os.File // no-open mode: the daemon's descriptor on the backing inode
}

var (
	_ gofs.NodeWrapChilder = (*node)(nil)
	_ gofs.NodeOpener      = (*node)(nil)
	_ gofs.NodeCreater     = (*node)(nil)
	_ gofs.NodeSetattrer   = (*node)(nil)
	_ gofs.NodeRenamer     = (*node)(nil)
)

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*gofs.LoopbackNode), ov: n.ov}
}

// name is the node's current name, or "" once it is unlinked or replaced.
func (n *node) name() string {
	name, _ := n.Parent()
	return name
}

// relPath is the node's path below the mount root ("" for the root).
func (n *node) relPath() string { return n.Path(n.ov.rootInode()) }

// backingPath is the node's path in the backing directory.
func (n *node) backingPath() string { return filepath.Join(n.ov.rootPath, n.relPath()) }

// Open opens the backing file and returns a hooked or a passthrough handle.
// In no-open mode it answers ENOSYS, so the kernel stops sending OPEN and
// RELEASE (noopen.go).
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.ov.stats.opens.Add(1)
	if n.ov.noOpen {
		return nil, 0, syscall.ENOSYS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.openedLocked(ctx, fh, ff, n.name())
}

// Create creates the backing file; the new child gets its mode like an Open.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	cn, ok := ch.Operations().(*node)
	if !ok || n.ov.noOpen {
		// No-open mode: the child is served through its node like any
		// file; a handle here would be released only by newer kernels.
		fh.(gofs.FileReleaser).Release(ctx)
		if ok {
			return ch, nil, ff | fuse.FOPEN_NOFLUSH, 0
		}
		return nil, nil, 0, syscall.EIO
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	h, ff, errno := cn.openedLocked(ctx, fh, ff, name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, ff, 0
}

// openedLocked wraps a freshly opened loopback handle. The hook decision is
// taken only when the inode has no other open handle, so the kernel never
// sees one inode open in passthrough and cached mode at once (EIO).
func (n *node) openedLocked(ctx context.Context, fh gofs.FileHandle, ff uint32, name string) (gofs.FileHandle, uint32, syscall.Errno) {
	lf, ok := fh.(*gofs.LoopbackFile)
	if !ok {
		fh.(gofs.FileReleaser).Release(ctx)
		return nil, 0, syscall.EIO
	}
	if n.opens == 0 {
		if hooked := isHookedName(name); hooked != n.hooked {
			n.hooked = hooked
			n.keepCache = false
		}
	}
	ff |= fuse.FOPEN_NOFLUSH
	if !n.hooked {
		n.opens++
		n.keepCache = false
		return &passFile{LoopbackFile: lf, n: n}, ff, 0
	}
	// Only index files get a capture (and the read descriptor it needs); a
	// cyrus.header handle has none.
	if n.cap == nil && strings.HasPrefix(name, indexName) {
		fd, _ := lf.PassthroughFd()
		rf, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			n.ov.log.Error("open read descriptor for index capture", zap.String("path", n.relPath()), zap.Error(err))
			lf.Release(ctx)
			return nil, 0, syscall.EIO
		}
		n.cap = &capture{rf: rf}
	}
	n.opens++
	if n.keepCache {
		ff |= fuse.FOPEN_KEEP_CACHE
	}
	n.keepCache = true
	n.ov.stats.hookedOpens.Add(1)
	return &hookFile{lf: lf, n: n, c: n.cap}, ff, 0
}

// released drops one handle; the last hooked one closes the read descriptor.
func (n *node) released() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.opens--
	if n.opens == 0 && n.cap != nil {
		n.cap.close()
		n.cap = nil
	}
}

// Setattr passes through; a truncation of a captured index first keeps the
// file's content as it was before the commit began. O_TRUNC arrives here
// without a file handle (go-fuse does not negotiate ATOMIC_O_TRUNC).
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		var c *capture
		if h, ok := f.(*hookFile); ok {
			c = h.c
		} else if f == nil {
			n.mu.Lock()
			c = n.cap
			n.mu.Unlock()
		}
		if c != nil {
			c.beforeTruncate(n)
		}
	}
	if f == nil && n.ov.noOpen && n.name() == "" {
		// No-open mode, file unlinked or renamed over: its path is gone,
		// its descriptor (if the node has one) is not.
		n.mu.Lock()
		fd := n.fd
		n.mu.Unlock()
		if fd != nil {
			f = gofs.NewLoopbackFileFromOS(fd) // shares fd; never released
		}
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// Rename passes through. A rename over cyrus.index (a repack renames
// cyrus.index.NEW) is a commit: the old and new files are diffed whole.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || newName != indexName || flags&unix.RENAME_EXCHANGE != 0 {
		return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	}
	// Writes still pending on the file being replaced belong before it.
	if ch := np.GetChild(newName); ch != nil {
		if dn, ok := ch.Operations().(*node); ok {
			dn.mu.Lock()
			if c := dn.cap; c != nil {
				c.mu.Lock()
				if c.dirty() {
					c.commitLocked(ctx, dn, "replaced")
				}
				c.mu.Unlock()
			}
			dn.mu.Unlock()
		}
	}
	dst := filepath.Join(np.backingPath(), newName)
	old, oldErr := os.ReadFile(dst)
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	if oldErr != nil {
		if !os.IsNotExist(oldErr) {
			n.ov.commitFailed(filepath.Join(np.relPath(), newName), "rename", fmt.Errorf("read replaced index: %w", oldErr))
		}
		return 0
	}
	n.ov.commitFiles(ctx, filepath.Join(np.relPath(), newName), np.backingPath(), old, dst)
	return 0
}
