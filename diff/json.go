package diff

import "encoding/json"

// jsonDelta is the JSON form of a Delta (the --log-deltas line format).
type jsonDelta struct {
	UID       uint32   `json:"uid"`
	GUID      string   `json:"guid"`
	OldModSeq uint64   `json:"old_modseq"`
	ModSeq    uint64   `json:"modseq"`
	Flags     []string `json:"flags"`
	Expunged  bool     `json:"expunged"`
	Updated   uint32   `json:"last_updated"`
	Changed   []string `json:"changed"`
}

type jsonBatch struct {
	Mailbox          string         `json:"mailbox"`
	UIDValidity      uint32         `json:"uidvalidity"`
	OldHighestModSeq uint64         `json:"old_highestmodseq"`
	HighestModSeq    uint64         `json:"highestmodseq"`
	SyncCRC          uint32         `json:"synccrc"`
	Repack           bool           `json:"repack,omitempty"`
	Records          []jsonDelta    `json:"records"`
	Header           []HeaderChange `json:"header,omitempty"`
}

// MarshalJSON writes the batch as one JSON object:
// {"mailbox":..,"uidvalidity":..,"highestmodseq":..,"records":[{"uid":..,
// "guid":..,"modseq":..,"flags":[..],"expunged":..},..],..}. Flags are the
// IMAP names: system flags then keywords.
func (b *Batch) MarshalJSON() ([]byte, error) {
	j := jsonBatch{Mailbox: b.Mailbox, UIDValidity: b.UIDValidity, OldHighestModSeq: b.OldHighestModSeq,
		HighestModSeq: b.HighestModSeq, SyncCRC: b.SyncCRC, Repack: b.Repack, Records: []jsonDelta{}, Header: b.Header}
	for _, d := range b.Records {
		j.Records = append(j.Records, jsonDelta{UID: d.UID, GUID: d.GUID.String(), OldModSeq: d.OldModSeq,
			ModSeq: d.ModSeq, Flags: FlagString(d.SystemFlags, d.UserFlags), Expunged: d.Expunged(),
			Updated: d.LastUpdated, Changed: d.Changed.Names()})
	}
	return json.Marshal(j)
}
