package config

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Limits on the files the exporter reads at start. A config file or a
// password is a few hundred bytes; the limits only stop a wrong path (a log,
// a device, a disk image) from being read whole into memory.
const (
	MaxConfigFileBytes = 1 << 20
	MaxSecretFileBytes = 64 << 10
)

// readRegularFile reads a regular file of at most limit bytes. Anything else
// is refused before it is opened: opening a FIFO with no writer blocks
// forever, and a directory, a socket or a device is never what was meant.
func readRegularFile(path string, limit int64) ([]byte, error) {
	// Stat follows symbolic links, so a Kubernetes secret (a link to a
	// regular file) passes.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, describeMode(fi.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Checked again on the open file: the path may have been swapped
	// between Stat and Open.
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, describeMode(fi.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

func describeMode(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	default:
		return "not a regular file"
	}
}

// FieldError is a bad value of one setting. Load reports it under the
// config file's key when the file supplied the value, and under the flag
// otherwise, so the message points where the value came from.
type FieldError struct {
	Flag string // without the leading dashes
	Msg  string
}

func (e *FieldError) Error() string { return "--" + e.Flag + ": " + e.Msg }

func fieldErr(flag, format string, args ...any) error {
	return &FieldError{Flag: flag, Msg: fmt.Sprintf(format, args...)}
}

// asFieldError is errors.As for *FieldError.
func asFieldError(err error) (*FieldError, bool) {
	var fe *FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}
