// Command gogzip compresses stdin to stdout with Go's standard library gzip
// or with klauspost/pgzip, so tests can get real encoder output.
//
// Usage: gogzip std|pgzip LEVEL [BLOCKSIZE]
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/klauspost/pgzip"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gogzip std|pgzip LEVEL [BLOCKSIZE]")
		os.Exit(2)
	}
	level, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad level:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var w io.WriteCloser
	switch os.Args[1] {
	case "std":
		w, err = gzip.NewWriterLevel(out, level)
	case "pgzip":
		pw, perr := pgzip.NewWriterLevel(out, level)
		if perr == nil && len(os.Args) > 3 {
			bs, _ := strconv.Atoi(os.Args[3])
			perr = pw.SetConcurrency(bs, 2)
		}
		w, err = pw, perr
	default:
		err = fmt.Errorf("unknown encoder %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if _, err := io.Copy(w, bufio.NewReader(os.Stdin)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
