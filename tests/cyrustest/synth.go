package cyrustest

import (
	"fmt"
	"strings"
	"time"
)

var synthBase = time.Date(2024, 1, 1, 9, 0, 0, 0, time.UTC)

var synthWords = strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet " +
	"kilo lima mike november oscar papa quebec romeo sierra tango")

// SynthMessage returns synthetic message number n (RFC 5322, CRLF line
// ends, example.test addresses) and its date; the same n always gives the
// same bytes, so the same GUID.
func SynthMessage(n int) ([]byte, time.Time) {
	date := synthBase.Add(time.Duration(n) * time.Minute)
	var b strings.Builder
	fmt.Fprintf(&b, "From: Lab Sender %d <sender%d@example.test>\r\n", n%7, n%7)
	b.WriteString("To: Lab Recipient <recipient@example.test>\r\n")
	fmt.Fprintf(&b, "Subject: synthetic message %d\r\n", n)
	fmt.Fprintf(&b, "Date: %s\r\n", date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	fmt.Fprintf(&b, "Message-ID: <cyrustest-%d@example.test>\r\n", n)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "Synthetic test message %d.\r\n", n)
	for k := 0; k < 8; k++ {
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(synthWords[(n+k*3+j)%len(synthWords)])
		}
		b.WriteString("\r\n")
	}
	return []byte(b.String()), date
}
