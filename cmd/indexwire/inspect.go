package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/indexwire/indexwire/diff"
)

func init() {
	register(command{"inspect", "decode a cyrus.index file or mailbox directory", runInspect})
	register(command{"diff", "print the record deltas between two cyrus.index files", runDiff})
}

// loadedIndex is an index file with its mailbox header, if one was found.
type loadedIndex struct {
	path  string
	raw   []byte
	index *diff.Index
	mbox  *diff.MailboxHeader // nil without cyrus.header
}

func (l *loadedIndex) names() []string {
	if l.mbox == nil {
		return nil
	}
	return l.mbox.UserFlags
}

// loadIndex reads PATH (a cyrus.index or a mailbox directory) and the
// cyrus.header beside it when present.
func loadIndex(path string) (*loadedIndex, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if st.IsDir() {
		dir, path = path, filepath.Join(path, "cyrus.index")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l := &loadedIndex{path: path, raw: raw}
	hp := filepath.Join(dir, "cyrus.header")
	if hb, err := os.ReadFile(hp); err == nil {
		if l.mbox, err = diff.ParseMailboxHeader(hp, hb); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if l.index, err = diff.DecodeIndex(path, raw); err != nil {
		return nil, err
	}
	return l, nil
}

type jsonRecord struct {
	UID           uint32   `json:"uid"`
	ModSeq        uint64   `json:"modseq"`
	GUID          string   `json:"guid"`
	Flags         []string `json:"flags"`
	Expunged      bool     `json:"expunged"`
	SystemFlags   uint32   `json:"system_flags"`
	UserFlags     []uint32 `json:"user_flags"`
	InternalDate  uint32   `json:"internaldate"`
	SentDate      uint32   `json:"sentdate"`
	Size          uint32   `json:"size"`
	HeaderSize    uint32   `json:"header_size"`
	GMTime        uint32   `json:"gmtime"`
	LastUpdated   uint32   `json:"last_updated"`
	SaveDate      uint32   `json:"savedate"`
	ContentLines  uint32   `json:"content_lines,omitempty"`
	CacheOffset   uint64   `json:"cache_offset"`
	CacheVersion  uint16   `json:"cache_version"`
	CID           string   `json:"cid"`
	CreatedModSeq uint64   `json:"createdmodseq"`
	CacheCRC      uint32   `json:"cache_crc"`
	CRC           uint32   `json:"crc"`
}

func recordJSON(r *diff.Record, names []string) jsonRecord {
	return jsonRecord{
		UID: r.UID, ModSeq: r.ModSeq, GUID: r.GUID.String(),
		Flags:    diff.FlagString(r.SystemFlags, diff.FlagNames(r, names)),
		Expunged: r.Expunged(), SystemFlags: r.SystemFlags, UserFlags: r.UserFlags[:],
		InternalDate: r.InternalDate, SentDate: r.SentDate, Size: r.Size, HeaderSize: r.HeaderSize,
		GMTime: r.GMTime, LastUpdated: r.LastUpdated, SaveDate: r.SaveDate, ContentLines: r.ContentLines,
		CacheOffset: r.CacheOffset, CacheVersion: r.CacheVersion, CID: fmt.Sprintf("%x", r.CID),
		CreatedModSeq: r.CreatedModSeq, CacheCRC: r.CacheCRC, CRC: r.CRC,
	}
}

func headerJSON(h *diff.Header) map[string]any {
	return map[string]any{
		"generation": h.Generation, "format": h.Format, "minor_version": h.MinorVersion,
		"start_offset": h.StartOffset, "record_size": h.RecordSize, "num_records": h.NumRecords,
		"last_appenddate": h.LastAppendDate, "last_uid": h.LastUID, "quota_mailbox_used": h.QuotaMailboxUsed,
		"pop3_last_login": h.POP3LastLogin, "uidvalidity": h.UIDValidity, "deleted": h.Deleted,
		"answered": h.Answered, "flagged": h.Flagged, "options": h.Options,
		"leaked_cache_records": h.LeakedCacheRecords, "highestmodseq": h.HighestModSeq,
		"deletedmodseq": h.DeletedModSeq, "exists": h.Exists, "first_expunged": h.FirstExpunged,
		"last_repack_time": h.LastRepackTime, "header_file_crc": h.HeaderFileCRC,
		"synccrcs_basic": h.SyncCRCBasic, "recentuid": h.RecentUID, "recenttime": h.RecentTime,
		"pop3_show_after": h.POP3ShowAfter, "quota_annot_used": h.QuotaAnnotUsed,
		"synccrcs_annot": h.SyncCRCAnnot, "unseen": h.Unseen, "createdmodseq": h.CreatedModSeq,
		"changes_epoch": h.ChangesEpoch, "crc": h.CRC,
	}
}

func runInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire inspect [--json] PATH\n\nPATH is a cyrus.index file or a mailbox directory (keyword names then come from its cyrus.header).")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want exactly one PATH", errUsage)
	}
	l, err := loadIndex(pos[0])
	if err != nil {
		return err
	}
	ix, h := l.index, l.index.Header
	checkErr := diff.Check(l.path, ix, l.names())
	if *asJSON {
		out := map[string]any{"path": l.path, "header": headerJSON(h)}
		if l.mbox != nil {
			out["mailbox"] = map[string]any{"name": l.mbox.Name, "unique_id": l.mbox.UniqueID, "user_flags": l.mbox.UserFlags}
		}
		recs := make([]jsonRecord, 0, len(ix.Records))
		for _, r := range ix.Records {
			recs = append(recs, recordJSON(r, l.names()))
		}
		out["records"] = recs
		if checkErr != nil {
			out["error"] = checkErr.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printHuman(stdout, l)
	}
	if checkErr != nil {
		fmt.Fprintf(stderr, "indexwire inspect: %v\n", checkErr)
		return exitError{1}
	}
	return nil
}

func printHuman(w io.Writer, l *loadedIndex) {
	h := l.index.Header
	fmt.Fprintf(w, "%s\n", l.path)
	if l.mbox != nil {
		fmt.Fprintf(w, "mailbox %s  unique id %s  keywords %q\n", l.mbox.Name, l.mbox.UniqueID, l.mbox.UserFlags)
	}
	fmt.Fprintf(w, "minor version %d  generation %d  records %d  exists %d  last uid %d  uidvalidity %d\n",
		h.MinorVersion, h.Generation, h.NumRecords, h.Exists, h.LastUID, h.UIDValidity)
	fmt.Fprintf(w, "highestmodseq %d  deletedmodseq %d  answered %d  flagged %d  deleted %d  unseen %d  quota used %d\n",
		h.HighestModSeq, h.DeletedModSeq, h.Answered, h.Flagged, h.Deleted, h.Unseen, h.QuotaMailboxUsed)
	fmt.Fprintf(w, "synccrcs.basic %08x  synccrcs.annot %08x  recentuid %d  options %#x  header crc %08x\n\n",
		h.SyncCRCBasic, h.SyncCRCAnnot, h.RecentUID, h.Options, h.CRC)
	fmt.Fprintf(w, "%8s %8s %-40s %6s  %s\n", "UID", "MODSEQ", "GUID", "SIZE", "FLAGS")
	for _, r := range l.index.Records {
		flags := diff.FlagString(r.SystemFlags, diff.FlagNames(r, l.names()))
		mark := ""
		if r.Expunged() {
			mark = "  [expunged]"
		}
		fmt.Fprintf(w, "%8d %8d %s %6d  %v%s\n", r.UID, r.ModSeq, r.GUID, r.Size, flags, mark)
	}
}

func runDiff(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("diff", stderr)
	asJSON := fs.Bool("json", false, "print the batch as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire diff [--json] OLD NEW\n\nOLD and NEW are cyrus.index files or mailbox directories; records are matched by UID.")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want OLD and NEW", errUsage)
	}
	o, err := loadIndex(pos[0])
	if err != nil {
		return err
	}
	n, err := loadIndex(pos[1])
	if err != nil {
		return err
	}
	mb := diff.MailboxInfo{UserFlags: n.names()}
	if n.mbox != nil {
		mb.UniqueID = n.mbox.UniqueID
	}
	b := diff.DiffIndexes(o.index, n.index, mb)
	b.Repack = o.index.Header.Generation != n.index.Header.Generation
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(b)
	}
	fmt.Fprintf(stdout, "mailbox %q uidvalidity %d highestmodseq %d -> %d synccrcs.basic %08x, %d record(s) changed\n",
		b.Mailbox, b.UIDValidity, b.OldHighestModSeq, b.HighestModSeq, b.SyncCRC, len(b.Records))
	for _, h := range b.Header {
		fmt.Fprintf(stdout, "  header %s: %d -> %d\n", h.Field, h.Old, h.New)
	}
	for _, d := range b.Records {
		fmt.Fprintf(stdout, "  uid %d guid %s modseq %d -> %d flags %v changed %v\n",
			d.UID, d.GUID, d.OldModSeq, d.ModSeq, diff.FlagString(d.SystemFlags, d.UserFlags), d.Changed.Names())
	}
	return nil
}
