package fs

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// No-open mode (Config.NoOpen). Open answers ENOSYS; the kernel then sets
// no_open for the whole connection and sends neither OPEN nor RELEASE again:
// each open(2) and close(2) of a file costs no round trip. I/O arrives with
// file handle 0, which go-fuse passes to the node's Read, Write and Fsync as
// a nil FileHandle, and the node serves it from one descriptor the daemon
// opens on the backing inode at its first I/O and closes when the kernel
// forgets the inode (or at unmount). FLUSH is answered ENOSYS once, which
// turns it off for the connection too. Nothing can use kernel passthrough.
//
// Capture is the same (Rule 2): a batch closes at the fsync after a header
// write, or at a rename over cyrus.index. The close of a handle that wrote
// and never fsynced is not seen: those writes stay pending and go into the
// next commit's batch (the index on disk is the source of truth, Rule 1).

var (
	_ gofs.NodeGetattrer   = (*node)(nil)
	_ gofs.NodeReader      = (*node)(nil)
	_ gofs.NodeWriter      = (*node)(nil)
	_ gofs.NodeWritever    = (*node)(nil)
	_ gofs.NodeFsyncer     = (*node)(nil)
	_ gofs.NodeFlusher     = (*node)(nil)
	_ gofs.NodeOnForgetter = (*node)(nil)
)

// bareFds are the descriptors of no-open mode, closed at unmount.
type bareFds struct {
	mu    sync.Mutex
	nodes map[*node]struct{}
}

func (b *bareFds) add(n *node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodes == nil {
		b.nodes = make(map[*node]struct{})
	}
	b.nodes[n] = struct{}{}
}

func (b *bareFds) remove(n *node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.nodes, n)
}

// closeAll closes every descriptor still open (after the last request).
func (b *bareFds) closeAll() {
	b.mu.Lock()
	ns := b.nodes
	b.nodes = nil
	b.mu.Unlock()
	for n := range ns {
		n.closeBare()
	}
}

// bare returns the daemon's descriptor on the node's backing inode and its
// capture, opening both at the first call. The backing file is opened by
// path and must still be the inode the kernel knows (a file replaced by a
// rename before its first read cannot be reached by path any more).
func (n *node) bare() (*os.File, *capture, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd != nil {
		return n.fd, n.cap, 0
	}
	if n.name() == "" {
		return nil, nil, syscall.ESTALE
	}
	p := n.backingPath()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ETXTBSY) {
		f, err = os.Open(p)
	}
	if err != nil {
		n.ov.log.Error("open backing file", zap.String("path", n.relPath()), zap.Error(err))
		return nil, nil, gofs.ToErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || n.ov.inoFromStat(&st) != n.StableAttr().Ino {
		f.Close()
		n.ov.log.Error("backing file was replaced before its first read", zap.String("path", n.relPath()))
		return nil, nil, syscall.ESTALE
	}
	n.fd = f
	// Every file gets a capture: writes are captured only while the file
	// is named cyrus.index, whatever its name now.
	n.cap = &capture{rf: f}
	n.ov.bare.add(n)
	return n.fd, n.cap, 0
}

// closeBare closes the no-open descriptor, if any.
func (n *node) closeBare() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd == nil {
		return
	}
	if n.cap != nil {
		n.cap.mu.Lock()
		if n.cap.dirty() {
			n.ov.log.Warn("index writes never committed (no fsync before the file was forgotten)", zap.String("path", n.relPath()))
		}
		n.cap.mu.Unlock()
	}
	n.fd.Close()
	n.fd, n.cap = nil, nil
}

// OnForget closes the no-open descriptor when the kernel drops the inode.
func (n *node) OnForget() {
	if n.ov.noOpen {
		n.ov.bare.remove(n)
		n.closeBare()
	}
}

// Getattr stats the handle or the backing path; in no-open mode, once the
// node has a descriptor, that descriptor: an fstat by a client must still
// work after the file was renamed over or unlinked, as it does with a handle.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if f == nil && n.ov.noOpen {
		n.mu.Lock()
		fd := n.fd
		n.mu.Unlock()
		if fd != nil {
			var st syscall.Stat_t
			if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
				return gofs.ToErrno(err)
			}
			out.FromStat(&st)
			return 0
		}
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

// Read reads from the handle, or in no-open mode from the node's descriptor.
func (n *node) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f != nil {
		if r, ok := f.(gofs.FileReader); ok {
			return r.Read(ctx, dest, off)
		}
		return nil, syscall.ENOTSUP
	}
	fd, _, errno := n.bare()
	if errno != 0 {
		return nil, errno
	}
	k, err := unix.Pread(int(fd.Fd()), dest, off)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// Write writes through the handle, or in no-open mode captures the write
// and performs it on the node's descriptor.
func (n *node) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f != nil {
		if w, ok := f.(gofs.FileWriter); ok {
			return w.Write(ctx, data, off)
		}
		return 0, syscall.ENOTSUP
	}
	fd, c, errno := n.bare()
	if errno != 0 {
		return 0, errno
	}
	return c.write(n, nil, data, off, func() (uint32, syscall.Errno) {
		k, err := unix.Pwrite(int(fd.Fd()), data, off)
		if err != nil {
			return 0, gofs.ToErrno(err)
		}
		return uint32(k), 0
	})
}

// Writev is Write for a payload the transport delivered in pieces.
func (n *node) Writev(ctx context.Context, f gofs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	if w, ok := f.(gofs.FileWritever); ok {
		return w.Writev(ctx, data, off)
	}
	var all []byte
	for _, d := range data {
		all = append(all, d...)
	}
	return n.Write(ctx, f, all, off)
}

// Fsync syncs the handle, or in no-open mode the node's descriptor, where
// the fsync after a header write closes the commit.
func (n *node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if f != nil {
		if s, ok := f.(gofs.FileFsyncer); ok {
			return s.Fsync(ctx, flags)
		}
		return syscall.ENOTSUP
	}
	fd, c, errno := n.bare()
	if errno != 0 {
		return errno
	}
	t0 := time.Now()
	if err := fd.Sync(); err != nil {
		errno = gofs.ToErrno(err)
	}
	n.ov.stats.since(t0, &n.ov.stats.fsyncNanos)
	c.fsynced(ctx, n, errno)
	return errno
}

// Flush forwards to the handle. Without one (no-open mode) it answers
// ENOSYS, so the kernel stops sending FLUSH: writes are synchronous and
// there is nothing to flush.
func (n *node) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	if f == nil {
		return syscall.ENOSYS
	}
	if fl, ok := f.(gofs.FileFlusher); ok {
		return fl.Flush(ctx)
	}
	return 0
}

// inoFromStat is the inode number go-fuse's loopback gives a backing file.
func (ov *overlay) inoFromStat(st *unix.Stat_t) uint64 {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	return swap(uint64(st.Dev)) ^ swap(ov.root.Dev) ^ st.Ino
}
