package tcptest

import (
	"io"
	"time"
)

// ReadSlowly reads r to its end in 16 KiB pieces with pace between them, as a client on a slow
// link does, and returns how many bytes it read and the error that ended it (nil at the end).
func ReadSlowly(r io.Reader, pace time.Duration) (int, error) {
	buf := make([]byte, 16<<10)
	got := 0
	for {
		n, err := io.ReadFull(r, buf)
		got += n
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return got, nil
		default:
			return got, err
		}
		time.Sleep(pace) // a slow link: the reader's pace, not a wait for an event
	}
}
