package cyrustest

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Examine is the parsed output of Cyrus 3.6 `mbexamine <mailbox>`.
// Expunged records are not in it (mbexamine skips them).
type Examine struct {
	Mailbox        string   // name as printed after "Examining"
	Path           string   // data directory
	ACL            string   // tab separated, as printed
	UniqueID       string   // mailbox unique id
	UserFlagNames  []string // keyword names by bit (cyrus.header); empty for "[none]"
	Generation     uint32
	MinorVersion   uint32
	HeaderSize     uint32 // start_offset
	RecordSize     uint32
	Exists         uint32 // "Number of Messages"
	MailboxSize    uint64 // quota_mailbox_used
	AnnotSize      uint64
	LastAppendDate int64
	UIDValidity    uint32
	LastUID        uint32
	Deleted        uint32
	Answered       uint32
	Flagged        uint32
	Options        []string // option names; empty for NONE
	LastPOP3Login  int64
	HighestModSeq  uint64
	Records        []ExamineRecord
}

// ExamineRecord is one message block of mbexamine output.
type ExamineRecord struct {
	UID           uint32
	InternalDate  int64
	SentDate      int64
	SaveDate      int64
	Size          uint32
	HeaderSize    uint32
	LastUpdated   int64
	SysFlags      uint32 // low 16 bits of system_flags (3.6 prints no more)
	CacheVersion  uint32
	GUID          string // 40 lowercase hex digits
	ModSeq        uint64
	ThrID         uint64 // conversation id ("THRID"), 0 if not printed
	InternalFlags []string
	SystemFlags   []string  // FLAG_SEEN, FLAG_DRAFT, ...
	UserFlags     [4]uint32 // UserFlags[i] = user_flags[i] (mbexamine prints [3] first)
}

var systemFlagNames = map[string]string{
	"FLAG_ANSWERED": `\Answered`,
	"FLAG_FLAGGED":  `\Flagged`,
	"FLAG_DELETED":  `\Deleted`,
	"FLAG_DRAFT":    `\Draft`,
	"FLAG_SEEN":     `\Seen`,
}

// Record returns the record of uid, or nil.
func (e *Examine) Record(uid uint32) *ExamineRecord {
	for i := range e.Records {
		if e.Records[i].UID == uid {
			return &e.Records[i]
		}
	}
	return nil
}

// Flags returns r's IMAP flags (system flags, then keywords by name),
// sorted, as FETCH FLAGS would show them (without \Recent).
func (e *Examine) Flags(r *ExamineRecord) ([]string, error) {
	out := []string{}
	for _, f := range r.SystemFlags {
		n, ok := systemFlagNames[f]
		if !ok {
			return nil, fmt.Errorf("uid %d: unknown system flag %s", r.UID, f)
		}
		out = append(out, n)
	}
	for bit := 0; bit < 128; bit++ {
		if r.UserFlags[bit/32]&(1<<(bit%32)) == 0 {
			continue
		}
		if bit >= len(e.UserFlagNames) {
			return nil, fmt.Errorf("uid %d: user flag bit %d has no name", r.UID, bit)
		}
		out = append(out, e.UserFlagNames[bit])
	}
	sort.Strings(out)
	return out, nil
}

var (
	reExamining = regexp.MustCompile(`^Examining (.*)\.\.\. Mailbox Header Info:`)
	reRecord    = regexp.MustCompile(`^\d+> UID:`)
	reCacheItem = regexp.MustCompile(`^ (\w+)>\{(\d+)\}`)
)

// ParseMbexamine parses the output of Cyrus 3.6 mbexamine for one mailbox.
func ParseMbexamine(out string) (*Examine, error) {
	hdr, body, ok := strings.Cut(out, "\n Message Info:\n")
	if !ok {
		return nil, fmt.Errorf("mbexamine: no \"Message Info\" section")
	}
	e := &Examine{}
	if err := e.parseHeader(hdr); err != nil {
		return nil, fmt.Errorf("mbexamine header: %w", err)
	}
	if err := e.parseRecords(body); err != nil {
		return nil, fmt.Errorf("mbexamine %s: %w", e.Mailbox, err)
	}
	return e, nil
}

func (e *Examine) parseHeader(hdr string) error {
	m := reExamining.FindStringSubmatch(hdr)
	if m == nil {
		return fmt.Errorf("no \"Examining\" line")
	}
	e.Mailbox = m[1]
	fields := map[string]string{}
	for _, line := range strings.Split(hdr, "\n")[1:] {
		line = strings.TrimSpace(line)
		// lines hold one or more "Key: value" pairs separated by two spaces
		for _, part := range strings.Split(line, "  ") {
			k, v, ok := strings.Cut(part, ": ")
			if !ok {
				if k, ok = strings.CutSuffix(part, ":"); !ok {
					continue
				}
			}
			fields[k] = strings.TrimSpace(v)
		}
	}
	// ACL entries and user flag names contain single spaces/tabs: take them whole
	for _, line := range strings.Split(hdr, "\n") {
		if v, ok := strings.CutPrefix(line, "  Mailbox ACL: "); ok {
			e.ACL = strings.TrimRight(v, "\t ")
		}
		if v, ok := strings.CutPrefix(line, "  User Flags: "); ok {
			if v = strings.TrimSpace(v); v != "[none]" {
				e.UserFlagNames = strings.Fields(v)
			}
		}
		if v, ok := strings.CutPrefix(line, "  Mailbox Options: "); ok {
			if v = strings.TrimSpace(v); v != "NONE" {
				e.Options = strings.Fields(v)
			}
		}
	}
	e.Path = fields["Path to mailbox"]
	e.UniqueID = fields["Unique ID"]
	var err error
	num := func(key string, bits int) uint64 {
		if err != nil {
			return 0
		}
		v, ok := fields[key]
		if !ok {
			err = fmt.Errorf("missing %q", key)
			return 0
		}
		v = strings.TrimSuffix(v, " bytes")
		if strings.HasPrefix(v, "(") { // "(1796312666) Thu Dec ..."
			v = strings.TrimPrefix(v[:strings.IndexByte(v+")", ')')], "(")
		}
		n, perr := strconv.ParseUint(v, 10, bits)
		if perr != nil {
			err = fmt.Errorf("bad %q: %q", key, fields[key])
		}
		return n
	}
	e.Generation = uint32(num("Generation Number", 32))
	e.MinorVersion = uint32(num("Minor Version", 32))
	e.HeaderSize = uint32(num("Header Size", 32))
	e.RecordSize = uint32(num("Record Size", 32))
	e.Exists = uint32(num("Number of Messages", 32))
	e.MailboxSize = num("Mailbox Size", 64)
	e.AnnotSize = num("Annotations Size", 64)
	e.LastAppendDate = int64(num("Last Append Date", 32))
	e.UIDValidity = uint32(num("UIDValidity", 32))
	e.LastUID = uint32(num("Last UID", 32))
	e.Deleted = uint32(num("Deleted", 32))
	e.Answered = uint32(num("Answered", 32))
	e.Flagged = uint32(num("Flagged", 32))
	e.LastPOP3Login = int64(num("Last POP3 Login", 32))
	e.HighestModSeq = num("Highest Mod Sequence", 64)
	return err
}

func (e *Examine) parseRecords(body string) error {
	var cur []string // lines of the record being read
	flush := func() error {
		if cur == nil {
			return nil
		}
		r, err := parseRecordLines(cur)
		if err != nil {
			return err
		}
		e.Records = append(e.Records, r)
		cur = nil
		return nil
	}
	for pos := 0; pos < len(body); {
		end := strings.IndexByte(body[pos:], '\n')
		if end < 0 {
			end = len(body) - pos
		}
		line := body[pos : pos+end]
		next := pos + end + 1
		switch {
		case reRecord.MatchString(line):
			if err := flush(); err != nil {
				return err
			}
			cur = []string{line}
		case strings.HasPrefix(line, "      > "):
			if cur == nil {
				return fmt.Errorf("continuation line before any record at byte %d", pos)
			}
			cur = append(cur, line)
		case reCacheItem.MatchString(line):
			// " Name>{N}" then N bytes of cache data then "\n"
			m := reCacheItem.FindStringSubmatch(line)
			n, _ := strconv.Atoi(m[2])
			dataStart := pos + len(m[0])
			if dataStart+n > len(body) {
				return fmt.Errorf("cache item %s of %d bytes overruns output at byte %d", m[1], n, pos)
			}
			next = dataStart + n
			if next < len(body) && body[next] == '\n' {
				next++
			}
		case strings.TrimSpace(line) == "":
		default:
			return fmt.Errorf("unexpected line at byte %d: %q", pos, line)
		}
		pos = next
	}
	return flush()
}

func parseRecordLines(lines []string) (ExamineRecord, error) {
	var r ExamineRecord
	s := strings.Join(lines, " ")
	s = strings.ReplaceAll(s, "LASTUPD :", "LASTUPD:")
	s = strings.ReplaceAll(s, "THRID: ", "THRID:")
	vals := map[string][]string{}
	key := ""
	for i, tok := range strings.Fields(s) {
		if i == 0 || tok == ">" {
			continue // record number "000001>" and line markers
		}
		if k, v, ok := strings.Cut(tok, ":"); ok {
			key = k
			vals[k] = nil
			if v != "" {
				vals[k] = append(vals[k], v)
			}
			continue
		}
		if key == "" {
			return r, fmt.Errorf("stray token %q in record %q", tok, s)
		}
		vals[key] = append(vals[key], tok)
	}
	var err error
	one := func(k string) string {
		v, ok := vals[k]
		if !ok || len(v) != 1 {
			if err == nil {
				err = fmt.Errorf("record %q: bad or missing %s", lines[0], k)
			}
			return "0"
		}
		return v[0]
	}
	u := func(k string, base, bits int) uint64 {
		s := one(k)
		n, perr := strconv.ParseUint(s, base, bits)
		if perr != nil && err == nil {
			err = fmt.Errorf("record %q: bad %s %q", lines[0], k, s)
		}
		return n
	}
	r.UID = uint32(u("UID", 10, 32))
	r.InternalDate = int64(u("INT_DATE", 10, 32))
	r.SentDate = int64(u("SENTDATE", 10, 32))
	r.SaveDate = int64(u("SAVEDATE", 10, 32))
	r.Size = uint32(u("SIZE", 10, 32))
	r.HeaderSize = uint32(u("HDRSIZE", 10, 32))
	r.LastUpdated = int64(u("LASTUPD", 10, 32))
	r.SysFlags = uint32(u("SYSFLAGS", 16, 32))
	r.CacheVersion = uint32(u("CACHEVER", 10, 32))
	r.GUID = one("GUID")
	r.ModSeq = u("MODSEQ", 10, 64)
	if _, ok := vals["THRID"]; ok {
		r.ThrID = u("THRID", 16, 64)
	}
	r.InternalFlags = vals["INTERNALFLAGS"]
	r.SystemFlags = vals["SYSTEMFLAGS"]
	uf := vals["USERFLAGS"]
	if len(uf) != 4 {
		return r, fmt.Errorf("record %q: USERFLAGS has %d words", lines[0], len(uf))
	}
	for i, w := range uf {
		n, perr := strconv.ParseUint(w, 16, 32)
		if perr != nil {
			return r, fmt.Errorf("record %q: bad USERFLAGS word %q", lines[0], w)
		}
		r.UserFlags[3-i] = uint32(n)
	}
	if err == nil && len(r.GUID) != 40 {
		err = fmt.Errorf("record %q: GUID %q is not 40 hex digits", lines[0], r.GUID)
	}
	return r, err
}
