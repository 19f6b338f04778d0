package edge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/perchhq/perch/internal/wire"
)

// AnyCollection is the key of Config.CacheControl for every collection not named.
const AnyCollection = "*"

// cacheControl resolves the Cache-Control of a collection's cacheable answers, computed once
// from Config.CacheControl.
type cacheControl struct {
	byCollection map[string]ccPolicy
	fallback     ccPolicy
}

// ccPolicy is a collection's Cache-Control header and the stale-while-revalidate window the
// edge itself honours, in seconds (0: none).
type ccPolicy struct {
	header []byte
	// private is header for answers that depend on who asks (a collection whose read rule
	// is not public): "private" first, without "public" and s-maxage, so that no shared
	// cache keeps them for others.
	private []byte
	swr     uint32
}

func newCCPolicy(norm string) ccPolicy {
	p := ccPolicy{header: []byte(norm), private: privateHeader(norm)}
	for _, d := range strings.Split(norm, ", ") {
		if v, ok := strings.CutPrefix(d, "stale-while-revalidate="); ok {
			n, _ := strconv.ParseUint(v, 10, 31)
			p.swr = uint32(n)
		}
	}
	return p
}

func newCacheControl(policies map[string]string) (*cacheControl, error) {
	cc := &cacheControl{byCollection: map[string]ccPolicy{}, fallback: ccPolicy{header: valNoCache, private: valPrivateNoCache}}
	for coll, v := range policies {
		if coll != AnyCollection && !wire.ValidCollection(coll) {
			return nil, fmt.Errorf("cache control of %q: not a collection name", coll)
		}
		norm, err := ParseCacheControl(v)
		if err != nil {
			return nil, fmt.Errorf("cache control of %q: %w", coll, err)
		}
		if coll == AnyCollection {
			cc.fallback = newCCPolicy(norm)
		} else {
			cc.byCollection[coll] = newCCPolicy(norm)
		}
	}
	return cc, nil
}

// of returns the Cache-Control of collection's documents and pages. The lookup of a byte slice
// converted to a string key does not allocate.
func (cc *cacheControl) of(collection []byte) []byte { return cc.policy(collection).header }

// ofPrivate is of for the answers of a collection that not everyone may read.
func (cc *cacheControl) ofPrivate(collection []byte) []byte { return cc.policy(collection).private }

// privateHeader is a normalised Cache-Control value made private.
func privateHeader(norm string) []byte {
	ds := []string{"private"}
	for _, d := range strings.Split(norm, ", ") {
		if d == "" || d == "public" || d == "private" || strings.HasPrefix(d, "s-maxage=") {
			continue
		}
		ds = append(ds, d)
	}
	return []byte(strings.Join(ds, ", "))
}

// staleWhileRevalidate is how long, in seconds, the edge may answer with a document of
// collection that went stale while it fetches the current version (RFC 5861 §3).
func (cc *cacheControl) staleWhileRevalidate(collection []byte) uint32 {
	return cc.policy(collection).swr
}

func (cc *cacheControl) policy(collection []byte) ccPolicy {
	if v, ok := cc.byCollection[string(collection)]; ok {
		return v
	}
	return cc.fallback
}

// ParseCacheControl checks a Cache-Control value an operator gives a collection (RFC 9111
// §5.2.2) and returns it normalised. Only the response directives that make sense for an
// API's documents are taken, including stale-while-revalidate and stale-if-error (RFC 5861);
// public and private exclude each other, and no-store excludes the rest.
func ParseCacheControl(v string) (string, error) {
	var (
		out  []string
		seen = map[string]bool{}
	)
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, arg, hasArg := strings.Cut(part, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		arg = strings.TrimSpace(arg)
		if seen[name] {
			return "", fmt.Errorf("directive %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "public", "private", "no-cache", "no-store", "must-revalidate", "proxy-revalidate", "immutable", "no-transform":
			if hasArg {
				return "", fmt.Errorf("directive %s takes no argument", name)
			}
			out = append(out, name)
		case "max-age", "s-maxage", "stale-while-revalidate", "stale-if-error":
			n, err := strconv.ParseUint(arg, 10, 31)
			if !hasArg || err != nil {
				return "", fmt.Errorf("directive %s needs a number of seconds, got %q", name, arg)
			}
			out = append(out, name+"="+strconv.FormatUint(n, 10))
		default:
			return "", fmt.Errorf("unknown directive %q", name)
		}
	}
	switch {
	case len(out) == 0:
		return "", errors.New("no directive")
	case seen["public"] && seen["private"]:
		return "", errors.New("public and private exclude each other")
	case seen["no-store"] && len(out) > 1:
		return "", errors.New("no-store excludes the other directives")
	}
	return strings.Join(out, ", "), nil
}
