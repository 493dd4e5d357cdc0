package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// passFile is a handle of a file that is not hooked. It embeds the loopback
// file, so it keeps PassthroughFd and the kernel serves its I/O directly from
// the backing file; the overlay only counts its release.
type passFile struct {
	*gofs.LoopbackFile
	n *node
}

// Release closes the backing descriptor and drops the node's open count.
func (p *passFile) Release(ctx context.Context) syscall.Errno {
	errno := p.LoopbackFile.Release(ctx)
	p.n.released()
	return errno
}

// hookFile is a handle of an index file. It deliberately does not embed the
// loopback file: an embedded PassthroughFd would make the kernel bypass the
// write hook (fuse-notes.md §1, trap 1). Everything is forwarded by hand.
type hookFile struct {
	lf *gofs.LoopbackFile
	n  *node
	c  *capture // nil for a file opened under a name that is not an index's
}

var (
	_ gofs.FileWriter    = (*hookFile)(nil)
	_ gofs.FileWritever  = (*hookFile)(nil)
	_ gofs.FileReader    = (*hookFile)(nil)
	_ gofs.FileGetattrer = (*hookFile)(nil)
	_ gofs.FileStatxer   = (*hookFile)(nil)
	_ gofs.FileSetattrer = (*hookFile)(nil)
	_ gofs.FileFsyncer   = (*hookFile)(nil)
	_ gofs.FileFlusher   = (*hookFile)(nil)
	_ gofs.FileReleaser  = (*hookFile)(nil)
	_ gofs.FileLseeker   = (*hookFile)(nil)
	_ gofs.FileAllocater = (*hookFile)(nil)
	_ gofs.FileGetlker   = (*hookFile)(nil)
	_ gofs.FileSetlker   = (*hookFile)(nil)
	_ gofs.FileSetlkwer  = (*hookFile)(nil)
)

// Write records the bytes the write replaces, then writes through.
func (h *hookFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.c == nil {
		return h.lf.Write(ctx, data, off)
	}
	return h.c.write(h.n, h, data, off, func() (uint32, syscall.Errno) { return h.lf.Write(ctx, data, off) })
}

// Writev is Write for a payload the transport delivered in pieces.
func (h *hookFile) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var all []byte
	for _, d := range data {
		all = append(all, d...)
	}
	return h.Write(ctx, all, off)
}

// Fsync syncs the backing file; after a header write it closes the commit.
func (h *hookFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	t0 := time.Now()
	errno := h.lf.Fsync(ctx, flags)
	h.n.ov.stats.since(t0, &h.n.ov.stats.fsyncNanos)
	if h.c != nil {
		h.c.fsynced(ctx, h.n, errno)
	}
	return errno
}

// Release closes the handle; writes it left uncommitted are committed.
func (h *hookFile) Release(ctx context.Context) syscall.Errno {
	if h.c != nil {
		h.c.releasing(ctx, h)
	}
	errno := h.lf.Release(ctx)
	h.n.released()
	return errno
}

// Flush is not sent by the kernel (FOPEN_NOFLUSH); kept for completeness.
func (h *hookFile) Flush(ctx context.Context) syscall.Errno { return h.lf.Flush(ctx) }

// Read passes through.
func (h *hookFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, dest, off)
}

// Getattr passes through.
func (h *hookFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}

// Statx passes through.
func (h *hookFile) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return h.lf.Statx(ctx, flags, mask, out)
}

// Setattr passes through (the node's Setattr saw the truncation first).
func (h *hookFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Setattr(ctx, in, out)
}

// Lseek passes through (SEEK_DATA/SEEK_HOLE).
func (h *hookFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

// Allocate passes through.
func (h *hookFile) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return h.lf.Allocate(ctx, off, size, mode)
}

// Getlk passes through (only used with EnableLocks, which stays off).
func (h *hookFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return h.lf.Getlk(ctx, owner, lk, flags, out)
}

// Setlk passes through (only used with EnableLocks, which stays off).
func (h *hookFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.lf.Setlk(ctx, owner, lk, flags)
}

// Setlkw passes through (only used with EnableLocks, which stays off).
func (h *hookFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.lf.Setlkw(ctx, owner, lk, flags)
}
