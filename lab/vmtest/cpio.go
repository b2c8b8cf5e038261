package vmtest

import (
	"fmt"
	"io"
)

// cpioWriter writes an initramfs as the kernel reads it: a "newc" cpio
// archive (the SVR4 format without checksums, as `cpio -H newc` writes it).
type cpioWriter struct {
	w   io.Writer
	ino int
	n   int64 // bytes written, for padding
	err error
}

// The mode bits of the entries an initramfs needs.
const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioChar = 0o020000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header, the name and data, each padded to four bytes.
func (c *cpioWriter) entry(name string, mode int, rdevMajor, rdevMinor int, data []byte) {
	c.ino++
	nlink := 1
	if mode&cpioDir != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

// Dir adds a directory (no leading slash: "dev", "lib/modules").
func (c *cpioWriter) Dir(name string) { c.entry(name, cpioDir|0o755, 0, 0, nil) }

// File adds a regular file with the permission bits perm.
func (c *cpioWriter) File(name string, perm int, data []byte) {
	c.entry(name, cpioReg|perm, 0, 0, data)
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, major, minor int) {
	c.entry(name, cpioChar|0o600, major, minor, nil)
}

// Close writes the trailer; the archive is complete once it returns nil.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}
