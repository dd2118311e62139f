package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/snapfs/snapfs/chain"
)

// sizeUnits are the suffixes parseSize accepts; they are binary whether written K or KiB.
var sizeUnits = []struct {
	suffixes []string
	shift    uint
}{
	{[]string{"KiB", "K"}, 10},
	{[]string{"MiB", "M"}, 20},
	{[]string{"GiB", "G"}, 30},
}

// parseSize parses a byte count: "65536", "64K", "64KiB", "1M", "1MiB" (case-insensitive units).
func parseSize(s string) (int64, error) {
	num, shift := s, uint(0)
unit:
	for _, u := range sizeUnits {
		for _, suf := range u.suffixes {
			if len(s) > len(suf) && strings.EqualFold(s[len(s)-len(suf):], suf) {
				num, shift = s[:len(s)-len(suf)], u.shift
				break unit
			}
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with K, KiB, M or MiB", s)
	}
	return n << shift, nil
}

// parseChunkSize parses --chunk-size: a power of two from chain.MinChunkSize to chain.MaxChunkSize.
func parseChunkSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if n&(n-1) != 0 || n < chain.MinChunkSize || n > chain.MaxChunkSize {
		return 0, fmt.Errorf("chunk size %s: want a power of two from %dK to %dM", s,
			chain.MinChunkSize>>10, chain.MaxChunkSize>>20)
	}
	return n, nil
}
