package filter

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// referenceRegexp translates a glob into an RE2 expression with the documented semantics, as an
// independent oracle for the greedy matcher.
func referenceRegexp(pattern string) *regexp.Regexp {
	var segments []string
	for _, seg := range strings.Split(pattern, ".") {
		if seg == "**" && len(segments) > 0 && segments[len(segments)-1] == "**" {
			continue // "**.**" means "**"
		}
		segments = append(segments, seg)
	}
	var re strings.Builder
	re.WriteString("^")
	skipSeparator := true
	for i, seg := range segments {
		last := i == len(segments)-1
		if seg == "**" {
			switch {
			case i == 0 && last:
				re.WriteString(".*")
			case i == 0:
				re.WriteString(`(?:[^.]*\.)*`)
			case last:
				re.WriteString(`(?:\.[^.]*)*`)
			default:
				re.WriteString(`\.(?:[^.]*\.)*`)
			}
			skipSeparator = true
			continue
		}
		if !skipSeparator {
			re.WriteString(`\.`)
		}
		skipSeparator = false
		pieces := strings.Split(seg, "*")
		for j, piece := range pieces {
			if j > 0 {
				re.WriteString(`[^.]*`)
			}
			re.WriteString(regexp.QuoteMeta(piece))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String())
}

func TestPatternMatchAgreesWithRegexpOracle(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	randomSegment := func(wildcards bool) string {
		var b strings.Builder
		for range 1 + rng.IntN(3) {
			switch r := rng.IntN(4); {
			case wildcards && r == 0:
				b.WriteByte('*')
			case r < 2:
				b.WriteByte('a')
			default:
				b.WriteByte('b')
			}
		}
		seg := b.String()
		for strings.Contains(seg, "**") {
			seg = strings.ReplaceAll(seg, "**", "*")
		}
		return seg
	}
	for i := range 20000 {
		var segs []string
		for range 1 + rng.IntN(5) {
			if rng.IntN(4) == 0 {
				segs = append(segs, "**")
			} else {
				segs = append(segs, randomSegment(true))
			}
		}
		pattern := strings.Join(segs, ".")
		var keySegs []string
		for range 1 + rng.IntN(6) {
			keySegs = append(keySegs, randomSegment(false))
		}
		key := strings.Join(keySegs, ".")

		kp, err := compilePattern(pattern)
		if err != nil {
			t.Fatalf("case %d: compilePattern(%q): %v", i, pattern, err)
		}
		if got, want := kp.match(key), referenceRegexp(pattern).MatchString(key); got != want {
			t.Fatalf("case %d: pattern %q on key %q: match = %v, oracle %v", i, pattern, key, got, want)
		}
	}
}
