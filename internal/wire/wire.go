package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/perchhq/perch/internal/problem"
)

// Stream and subject names. See the package doc for who publishes on which.
const (
	WriteStream          = "PERCH_WRITES"
	WriteSubjectPrefix   = "perch.writes."
	OutcomeSubjectPrefix = "perch.outcomes."
	ChangeSubjectPrefix  = "perch.changes."
	ReadSubject          = "perch.read"
	// PeerFillSubjectPrefix + an edge id is where that edge answers the cache fills of the
	// keys it owns for the other edges of its region (edge/owner.go).
	PeerFillSubjectPrefix = "perch.fill."
	// CoreQueue is the queue group of the core's read service: each read request is answered
	// by one core.
	CoreQueue = "perch-core"
	// CoreGroup is the priority group in which cores pull a partition's write batches.
	CoreGroup = "perch-core"
	// DefaultPartitions is the number of write partitions. Every edge and core of a fleet must
	// agree on it; the core records it in the database on first start and refuses another.
	DefaultPartitions = 16
)

// WriteSubject is the subject that carries the write batches of partition p.
func WriteSubject(p int) string { return WriteSubjectPrefix + strconv.Itoa(p) }

// OutcomeSubject is the subject on which edge receives the outcomes of its writes.
func OutcomeSubject(edge string) string { return OutcomeSubjectPrefix + edge }

// PeerFillSubject is the subject on which edge answers fills of the keys it owns.
func PeerFillSubject(edge string) string { return PeerFillSubjectPrefix + edge }

// ChangeSubject is the subject of the change events of collection.
func ChangeSubject(collection string) string { return ChangeSubjectPrefix + collection }

// A partition of the write stream is an ordering lane: the core applies each producer's
// batches of one partition in their order (Batch), and numbers the changes it makes in each
// partition without gaps. Which partition a command takes is the edge's choice (see
// WritePartition); the core accepts any.

// Partition maps a document to a partition: FNV-1a of "collection/id" mod n.
func Partition(collection, id string, n int) int {
	return int(docHash(collection, id) % uint32(n))
}

// WritePartition is the partition an edge publishes a write to: one of the lanes
// consecutive partitions that belong to the edge, chosen by the document. All writes that an
// edge takes for one document therefore go through one partition and are applied in the
// order the edge took them, while one edge's writes to many documents share a few
// partitions and so fill large batches: one stream message and one transaction for many
// writes. lanes is clamped to [1, n].
func WritePartition(edge, collection, id string, lanes, n int) int {
	lanes = max(1, min(lanes, n))
	h := fnv.New32a()
	h.Write([]byte(edge))
	base := h.Sum32() % uint32(n)
	return int((base + docHash(collection, id)%uint32(lanes)) % uint32(n))
}

func docHash(collection, id string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(collection))
	h.Write([]byte{'/'})
	h.Write([]byte(id))
	return h.Sum32()
}

// Op is the kind of a write command.
type Op string

// The write operations of the document API.
const (
	OpPut    Op = "put"    // create or replace
	OpPatch  Op = "patch"  // RFC 7396 merge patch of an existing document
	OpCreate Op = "create" // create with a server-made id; fails if the id exists
	OpDelete Op = "delete" // leave a tombstone
)

// Command is one write as the edge validated it. Data is a JSON object: the document for put and
// create, the merge patch for patch, empty for delete.
type Command struct {
	WriteID    string          `json:"write_id"`
	Op         Op              `json:"op"`
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	Data       json.RawMessage `json:"data,omitempty"`
	// IfMatch, when not zero, is the version the document must have for the write to apply;
	// AnyVersion (If-Match: *) asks only that the document exists.
	IfMatch int64 `json:"if_match,omitempty"`
	// IdemKey is the client's Idempotency-Key, already scoped to the caller; Fingerprint is a
	// digest of the request it came with. Both are empty without a key.
	IdemKey     string `json:"idem_key,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// User is the user the write acts for, as the edge verified its access token; empty for
	// an anonymous write. A document a write creates belongs to its User.
	User string `json:"user,omitempty"`
	// OwnerOnly is set when the collection's write rule is owner: the write applies to a
	// live document only if it belongs to User (else it is rejected forbidden). The edge
	// checks what it can see; the core decides, against the stored owner.
	OwnerOnly bool `json:"owner_only,omitempty"`
	// Refused is set by the core, never sent: the database refused to store this command,
	// which is then answered with this problem and recorded, without writing anything else.
	Refused *problem.Problem `json:"-"`
}

// AnyVersion is the IfMatch of `If-Match: *`: the write applies to any live version.
const AnyVersion int64 = -1

// Batch is one JetStream message: the commands an edge gathered for one partition in a short
// window, for any documents. Its ID is the message's Nats-Msg-Id. Commands are applied in
// order; each has its own outcome, so one failing command does not fail the others.
//
// Producer and Seq fence the order of application. A producer is one publisher of one
// partition (an edge process's lane) that numbers its batches 1, 2, 3, … without gaps: it
// publishes a batch only once JetStream stored the one before, and starts a new producer
// when a publish failed for good. A store applies a producer's batch only right after the
// one before it, whichever core delivers it and however JetStream redelivers, so a core may
// take many of a partition's batches at once and they still apply in the order the edge took
// the writes. A batch without Producer is not fenced.
//
// After, on the first batch of a producer that replaced another in the same lane, names the
// replaced producer's last batch that JetStream confirmed stored: the store applies the new
// producer's batches only once that one is applied, so a lane's writes keep their order across
// the change.
type Batch struct {
	ID        string    `json:"id"`
	Partition int       `json:"partition"`
	Edge      string    `json:"edge"`
	Producer  string    `json:"producer,omitempty"`
	Seq       int64     `json:"seq,omitempty"`
	After     *BatchRef `json:"after,omitempty"`
	Commands  []Command `json:"commands"`

	// Force is set by the core, never sent: the batch has waited too long for its
	// predecessor, which can then only be lost (see core.Config.EarlyLimit), and the fence is
	// to admit it anyway.
	Force bool `json:"-"`
	// Recorded is set by the core, never sent: every write of the batch may have its record
	// already (the core applied them one by one first), so a store looks each up, fenced or
	// not, and replays what it finds.
	Recorded bool `json:"-"`
}

// BatchRef names a batch of a producer.
type BatchRef struct {
	Producer string `json:"producer"`
	Seq      int64  `json:"seq"`
}

// Limits on what a decoded Batch may hold, so that a hostile or corrupt message cannot make
// the core allocate without bound.
const (
	MaxBatchCommands = 4096
	MaxNameLen       = 128
	// MaxIdemKeyLen bounds a scoped Idempotency-Key: the app's key and the client's key.
	MaxIdemKeyLen = 520
	// MaxDocumentBytes bounds a document's data, as stored (compacted): a PUT's body, and what
	// a PATCH may grow a document to. A document travels whole in one NATS message (a read's
	// answer, a write's outcome, a change event), so the NATS servers' max_payload must leave
	// room for it: 2 MiB or more (deploy/README.md).
	MaxDocumentBytes = 1 << 20
)

// Validate reports whether b is well-formed for partitions partitions.
func (b *Batch) Validate(partitions int) error {
	if b.ID == "" {
		return errors.New("batch without id")
	}
	if b.Partition < 0 || b.Partition >= partitions {
		return fmt.Errorf("batch partition %d out of range [0,%d)", b.Partition, partitions)
	}
	if len(b.Commands) == 0 || len(b.Commands) > MaxBatchCommands {
		return fmt.Errorf("batch with %d commands", len(b.Commands))
	}
	switch {
	case len(b.Producer) > MaxNameLen:
		return errors.New("batch producer too long")
	case b.Producer != "" && b.Seq < 1:
		return fmt.Errorf("batch of producer %q with sequence %d", b.Producer, b.Seq)
	case b.Producer == "" && b.Seq != 0:
		return errors.New("batch sequence without a producer")
	case b.After != nil && (b.Producer == "" || b.Seq != 1):
		return errors.New("after on a batch that does not open a producer")
	case b.After != nil && (b.After.Producer == "" || len(b.After.Producer) > MaxNameLen || b.After.Producer == b.Producer || b.After.Seq < 1):
		return fmt.Errorf("batch after %+v", *b.After)
	}
	for i := range b.Commands {
		c := &b.Commands[i]
		if err := c.Validate(); err != nil {
			return fmt.Errorf("command %d: %w", i, err)
		}
	}
	return nil
}

// Validate reports whether c is a well-formed command.
func (c *Command) Validate() error {
	if err := c.ValidateFields(); err != nil {
		return err
	}
	if c.Op == OpDelete {
		return nil
	}
	if len(c.Data) == 0 || c.Data[0] != '{' || !Valid(c.Data) {
		return errors.New("data is not a JSON object")
	}
	return StorableJSON(c.Data)
}

// ValidateFields is Validate without the checks of Data, for a caller that has made them
// already (the edge, which answers each with its own problem).
func (c *Command) ValidateFields() error {
	if c.WriteID == "" || len(c.WriteID) > MaxNameLen {
		return errors.New("bad write id")
	}
	if !ValidCollection(c.Collection) || !ValidName(c.ID) {
		return errors.New("bad collection or id")
	}
	if len(c.IdemKey) > MaxIdemKeyLen || len(c.Fingerprint) > MaxNameLen {
		return errors.New("idempotency key or fingerprint too long")
	}
	if len(c.User) > MaxNameLen {
		return errors.New("user too long")
	}
	// The user becomes the document's owner, which every store must be able to keep.
	if strings.IndexByte(c.WriteID+c.IdemKey+c.Fingerprint+c.User, 0) >= 0 {
		return errors.New("NUL in write id, key, fingerprint or user")
	}
	// A string that is not UTF-8 does not survive the batch's JSON (its bytes become U+FFFD,
	// and its length changes), and PostgreSQL's text refuses it.
	if !utf8.ValidString(c.WriteID + c.IdemKey + c.Fingerprint + c.User) {
		return errors.New("write id, key, fingerprint or user is not UTF-8")
	}
	switch c.Op {
	case OpPut, OpPatch, OpCreate, OpDelete:
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	if c.IfMatch < 0 && c.IfMatch != AnyVersion {
		return errors.New("negative if_match")
	}
	return nil
}

// MaxNesting is how deep the arrays and objects of a document may nest, as an edge takes it
// (CheckNesting): far beyond what apps keep, and far enough below encoding/json's limit for
// a whole message (10000) that a document keeps inside every message that carries it, a
// batch's command, an outcome, a change event, a read's answer.
const MaxNesting = 1000

// CheckNesting reports an error when the arrays and objects of data, valid JSON, nest deeper
// than MaxNesting. An edge checks each body with it; a core does not (Command.Validate), so
// that a write an edge of an older release took, before the bound, is not refused after its
// 202.
func CheckNesting(data []byte) error {
	if nesting(data) > MaxNesting {
		return fmt.Errorf("the JSON nests arrays and objects deeper than %d levels", MaxNesting)
	}
	return nil
}

// nesting is how deep the arrays and objects of valid JSON data nest.
func nesting(data []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			depth--
		}
	}
	return deepest
}

// StorableJSON reports why valid JSON could not be stored by every Perch store, or nil: it
// must be UTF-8 (encoding/json takes other bytes inside strings, PostgreSQL refuses them),
// and must not hold the NUL character (\u0000), an escaped UTF-16 surrogate that does not
// pair (PostgreSQL's jsonb refuses both), a number outside the range of a float64, or one
// with more digits after the decimal point than PostgreSQL's numeric keeps
// (MaxFractionDigits; 1e-400000 has 400000 of them).
//
// data should be valid JSON (Valid): the check is one pass over its bytes, which knows a
// string by its quotes and a number by its first byte, and allocates nothing for the strings
// and numbers of everyday documents.
func StorableJSON(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("the JSON is not UTF-8")
	}
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			end, err := storableString(data, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || c >= '0' && c <= '9':
			end := i + 1
			for end < len(data) && numberByte(data[end]) {
				end++
			}
			if err := storableNumber(data[i:end]); err != nil {
				return err
			}
			i = end - 1
		}
	}
	return nil
}

// storableString checks the escapes of the string of valid JSON data that starts at i, after
// its opening quote, and returns the index of its closing quote.
func storableString(data []byte, i int) (int, error) {
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i, nil
		case '\\':
		default:
			continue
		}
		if i+1 < len(data) && data[i+1] != 'u' {
			i++ // an escaped character other than \u: skip it
			continue
		}
		if i+6 > len(data) {
			return 0, errors.New("bad \\u escape")
		}
		r := hex4(data[i+2 : i+6])
		switch {
		case r < 0:
			return 0, errors.New("bad \\u escape")
		case r == 0:
			return 0, errors.New("the NUL character (\\u0000) cannot be stored")
		case r >= 0xD800 && r <= 0xDBFF:
			// A high surrogate must be followed by an escaped low one.
			if i+12 > len(data) || data[i+6] != '\\' || data[i+7] != 'u' {
				return 0, errors.New("unpaired UTF-16 surrogate escape")
			}
			if lo := hex4(data[i+8 : i+12]); lo < 0xDC00 || lo > 0xDFFF {
				return 0, errors.New("unpaired UTF-16 surrogate escape")
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, errors.New("unpaired UTF-16 surrogate escape")
		default:
			i += 5
		}
	}
	return len(data), nil
}

// hex4 is the value of the four hexadecimal digits of a \u escape, or -1.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// numberByte reports whether c may continue a JSON number.
func numberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+'
}

// storableNumber checks the JSON number n. One without an exponent and with at most 308
// digits before its decimal point is below 1e308, inside the range of a float64, and needs
// the digits after its point: the common case, decided without parsing.
func storableNumber(n []byte) error {
	if i := bytes.IndexAny(n, "eE"); i < 0 {
		whole, frac, _ := bytes.Cut(bytes.TrimPrefix(n, []byte("-")), []byte("."))
		if len(whole) <= 308 {
			if len(frac) > MaxFractionDigits {
				return fmt.Errorf("number %.20s… has more than %d digits after the decimal point", n, MaxFractionDigits)
			}
			return nil
		}
	}
	if _, err := strconv.ParseFloat(string(n), 64); err != nil {
		return fmt.Errorf("number %.20s… out of range", n)
	}
	if fractionDigits(string(n)) > MaxFractionDigits {
		return fmt.Errorf("number %.20s… has more than %d digits after the decimal point", n, MaxFractionDigits)
	}
	return nil
}

// MaxFractionDigits is the most digits after the decimal point a number in a document may
// need: PostgreSQL's numeric, which jsonb keeps its numbers in, keeps 16383.
const MaxFractionDigits = 16383

// maxExponent bounds the exponent of a number in a document: PostgreSQL's numeric refuses
// one of INT_MAX/2 or more either way, even on a zero (0e1073741823), which float64 takes.
const maxExponent = 1<<30 - 1

// fractionDigits is how many digits after the decimal point the JSON number n needs: those
// of its fraction less its exponent ("1.25" 2, "1e-5" 5, "1.5e3" 0), or MaxInt64 for an
// exponent beyond maxExponent either way.
func fractionDigits(n string) int64 {
	mantissa, exp, _ := strings.Cut(strings.ToLower(n), "e")
	_, frac, _ := strings.Cut(mantissa, ".")
	var e int64
	if exp != "" {
		var err error
		if e, err = strconv.ParseInt(exp, 10, 64); err != nil || e >= maxExponent || e <= -maxExponent {
			return math.MaxInt64
		}
	}
	return max(0, int64(len(frac))-e)
}

// ValidName reports whether s may name a collection or a document: 1 to MaxNameLen characters
// from [A-Za-z0-9._~-], and not "." or "..". Such names need no escaping in a URL path, a NATS
// subject token or SQL.
func ValidName[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > MaxNameLen || string(s) == "." || string(s) == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '~':
		case c == '.':
			// Allowed inside a name, but a NATS subject token may not contain it: collections
			// are checked again by ValidCollection.
		default:
			return false
		}
	}
	return true
}

// ValidCollection is ValidName without dots, since a collection is a NATS subject token.
func ValidCollection[T string | []byte](s T) bool {
	if !ValidName(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return false
		}
	}
	return true
}

// Document is a stored document. Deleted documents are tombstones: they keep their version
// so that sync can report the deletion and a late event cannot resurrect them.
type Document struct {
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	Version    int64           `json:"version"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Deleted    bool            `json:"deleted,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	// Owner is the user who created the document (Command.User of the write that created
	// it, or re-created it after a delete); empty for a document written anonymously.
	// Updates keep it; a tombstone keeps it too.
	Owner string `json:"owner,omitempty"`
}

// Outcome is what became of one command. Status is the HTTP status the write answers with
// (200, 201, 204, or the problem's status); Doc is the document after the write (nil when
// rejected). Replayed is set when the command had already been applied (same write id) or its
// Idempotency-Key had been seen with the same request: Doc and Status are then the first answer.
type Outcome struct {
	WriteID string           `json:"write_id"`
	Status  int              `json:"status"`
	Doc     *Document        `json:"doc,omitempty"`
	Problem *problem.Problem `json:"problem,omitempty"`
	// Collection is that of a rejected write (an applied one's is its Doc's), so that the
	// edge answers GET /v1/writes/{id} as the collection's rules say; empty in records of
	// older releases.
	Collection string `json:"collection,omitempty"`
	Replayed   bool   `json:"replayed,omitempty"`
	// Encoded is the outcome's JSON encoding when a store made one already (for its write
	// record), so that the core need not encode it again to answer the edge. Never on the
	// wire itself.
	Encoded json.RawMessage `json:"-"`
}

// Applied reports whether the write changed (or had changed) the store.
func (o *Outcome) Applied() bool { return o.Problem == nil }

// Outcomes is the message the core publishes to the edge that sent a batch, once it commits.
type Outcomes struct {
	Batch    string    `json:"batch"`
	Outcomes []Outcome `json:"outcomes"`
}

// ChangeEvent announces one applied change. Seq numbers the changes of a partition without
// gaps, starting at 1, so a receiver that sees Seq jump knows it missed events. Doc holds the
// document when it is small enough to carry (see the core's event size bound); otherwise the
// receiver must fetch it if it wants it.
type ChangeEvent struct {
	Partition  int       `json:"partition"`
	Seq        int64     `json:"seq"`
	Collection string    `json:"collection"`
	ID         string    `json:"id"`
	Version    int64     `json:"version"`
	Deleted    bool      `json:"deleted,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	Doc        *Document `json:"doc,omitempty"`
	// Encoded is the event's JSON encoding when a store made one already (for its outbox),
	// so that the core need not encode it again to publish it. Never on the wire itself.
	Encoded json.RawMessage `json:"-"`
}

// ReadKind is the kind of a read request to the core.
type ReadKind string

// The reads an edge asks of the core.
const (
	ReadGet   ReadKind = "get"
	ReadList  ReadKind = "list"
	ReadSync  ReadKind = "sync"
	ReadWrite ReadKind = "write"
	ReadOwned ReadKind = "owned"
)

// ReadRequest asks the core for a document, a page of a collection, a page of changes or the
// status of a write. Exactly one of the query fields matches Kind.
type ReadRequest struct {
	Kind       ReadKind    `json:"kind"`
	Collection string      `json:"collection,omitempty"`
	ID         string      `json:"id,omitempty"`
	List       *ListQuery  `json:"list,omitempty"`
	Sync       *SyncQuery  `json:"sync,omitempty"`
	WriteID    string      `json:"write_id,omitempty"`
	Owned      *OwnedQuery `json:"owned,omitempty"`
}

// OwnedQuery selects a page of one owner's live documents across every collection, in
// (collection, id) order, after the document After (nil: from the first). For a user's export
// and the deletion of an account.
type OwnedQuery struct {
	Owner string  `json:"owner"`
	After *DocRef `json:"after,omitempty"`
	Limit int     `json:"limit"`
}

// DocRef names a document.
type DocRef struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

// Order is the order of a list.
type Order string

// The orders a list can be read in.
const (
	OrderID            Order = "id"
	OrderIDDesc        Order = "-id"
	OrderUpdatedAt     Order = "updated_at"
	OrderUpdatedAtDesc Order = "-updated_at"
	DefaultListLimit         = 50
	MaxListLimit             = 1000
	DefaultSyncLimit         = 100
	MaxSyncLimit             = 1000
	MaxSyncCollections       = 32
)

// ListQuery selects a page of live documents of one collection. After is the position of the
// last item of the previous page (from the cursor); empty on the first page.
type ListQuery struct {
	Collection string    `json:"collection"`
	Order      Order     `json:"order"`
	Limit      int       `json:"limit"`
	IDPrefix   string    `json:"id_prefix,omitempty"`
	After      *Position `json:"after,omitempty"`
	// Owner, when not empty, keeps the page to the documents of that owner (a collection
	// whose read rule is owner).
	Owner string `json:"owner,omitempty"`
}

// Position is a place in a list: the sort key of the last item returned.
type Position struct {
	ID        string    `json:"id"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// ListPage is one page of a list. More is set when another page may follow.
type ListPage struct {
	Items []Document `json:"items"`
	More  bool       `json:"more"`
}

// SyncQuery asks for the changes of some collections after a point. After[p] is the last
// partition sequence number the client has seen of partition p (missing entries are 0).
type SyncQuery struct {
	Collections []string `json:"collections"`
	After       []int64  `json:"after,omitempty"`
	Limit       int      `json:"limit"`
	// Owned are the collections of Collections whose changes are kept to the documents of
	// Owner (their read rule is owner); Owner is empty when Owned is.
	Owned []string `json:"owned,omitempty"`
	Owner string   `json:"owner,omitempty"`
}

// SyncPage is a page of changes, tombstones included. Next is the position to resume from.
type SyncPage struct {
	Changes []Change `json:"changes"`
	Next    []int64  `json:"next"`
	More    bool     `json:"more"`
}

// Change is a document's latest state in a sync page.
type Change struct {
	Partition int      `json:"partition"`
	Seq       int64    `json:"seq"`
	Doc       Document `json:"doc"`
}

// WriteStatus is the state of a write: queued (not applied yet, or unknown), applied or
// rejected.
type WriteStatus string

// The states a write can be in.
const (
	WriteQueued   WriteStatus = "queued"
	WriteApplied  WriteStatus = "applied"
	WriteRejected WriteStatus = "rejected"
)

// ReadResponse answers a ReadRequest. Problem is set when the read failed (not found, bad
// query, store unavailable); otherwise the field matching the request's kind is. For a write
// status, a Write with Status 0 means the write is queued: issued recently, not applied yet.
type ReadResponse struct {
	Problem *problem.Problem `json:"problem,omitempty"`
	Doc     *Document        `json:"doc,omitempty"`
	Page    *ListPage        `json:"page,omitempty"`
	Sync    *SyncPage        `json:"sync,omitempty"`
	Write   *Outcome         `json:"write,omitempty"`
}
