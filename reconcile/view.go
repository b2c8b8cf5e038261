package reconcile

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"swarmvlan/schemas"
	"swarmvlan/spec"
)

// ParseDocuments decodes, defaults and validates every document in data: the
// strict decoder first, then the Go validation, then the JSON Schema as a
// second net. Every problem is reported with its field path.
func ParseDocuments(data []byte) ([]spec.Document, error) {
	docs, err := spec.DecodeAll(data)
	if err != nil {
		return nil, err
	}
	var problems []string
	for i := range docs {
		d := &docs[i]
		where := ""
		if len(docs) > 1 {
			where = fmt.Sprintf("document %d (%s %q): ", i+1, d.Object.GetKind(), d.Object.GetName())
		}
		if err := validateDocument(d); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				problems = append(problems, where+line)
			}
		}
	}
	if len(problems) > 0 {
		return docs, errors.New(strings.Join(problems, "\n"))
	}
	return docs, nil
}

func validateDocument(d *spec.Document) error {
	if err := spec.Validate(d.Object); err != nil {
		return err
	}
	if err := schemas.ValidateBytes(d.Raw); err != nil {
		return err
	}
	spec.SetDefaults(d.Object)
	return spec.Validate(d.Object)
}

// Doc is a valid document in force.
type Doc struct {
	Key         Key
	Object      spec.Object
	ModifyIndex uint64
}

// DocError is a document in KV that is not in force because it is invalid.
type DocError struct {
	Key         Key
	ModifyIndex uint64
	Err         error
}

// View is the in-memory desired state: the last valid version of every
// document under the spec prefix. An invalid version is recorded beside the
// last valid one, which stays in force.
type View struct {
	prefix string // "<prefix>spec/"

	mu      sync.RWMutex
	docs    map[Key]*Doc
	invalid map[Key]*DocError
	seen    map[string]uint64 // KV key -> ModifyIndex last processed
	held    int               // documents kept because the spec prefix read empty
	synced  chan struct{}     // closed after the first Sync
}

// NewView returns an empty view of the documents under specPrefix.
func NewView(specPrefix string) *View {
	return &View{prefix: specPrefix, docs: map[Key]*Doc{}, invalid: map[Key]*DocError{}, seen: map[string]uint64{}, synced: make(chan struct{})}
}

// Sync replaces the view's input with the full set of pairs under the spec
// prefix and returns the keys whose document or error changed.
//
// A read that comes back empty while two or more documents are in force is
// not taken as "delete everything": the documents are kept and Held reports
// how many. Deleting them one at a time works as usual.
func (v *View) Sync(pairs api.KVPairs) []Key {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer func() {
		select {
		case <-v.synced:
		default:
			close(v.synced)
		}
	}()
	changed := map[Key]bool{}
	present := map[Key]bool{}
	if len(pairs) == 0 && len(v.docs) >= 2 {
		v.held = len(v.docs)
		return nil
	}
	v.held = 0
	for _, p := range pairs {
		if strings.HasSuffix(p.Key, "/") {
			continue // a folder marker
		}
		k, err := v.KeyFor(p.Key)
		if err != nil {
			continue // not a document location; nothing to reconcile
		}
		present[k] = true
		if v.seen[p.Key] == p.ModifyIndex && p.ModifyIndex != 0 {
			continue
		}
		v.seen[p.Key] = p.ModifyIndex
		changed[k] = true
		obj, err := parseStored(k, p.Value)
		if err != nil {
			v.invalid[k] = &DocError{Key: k, ModifyIndex: p.ModifyIndex, Err: err}
			continue
		}
		delete(v.invalid, k)
		v.docs[k] = &Doc{Key: k, Object: obj, ModifyIndex: p.ModifyIndex}
	}
	for k := range v.docs {
		if !present[k] {
			delete(v.docs, k)
			changed[k] = true
		}
	}
	for k := range v.invalid {
		if !present[k] {
			delete(v.invalid, k)
			changed[k] = true
		}
	}
	for key := range v.seen {
		if k, err := v.KeyFor(key); err != nil || !present[k] {
			delete(v.seen, key)
		}
	}
	out := make([]Key, 0, len(changed))
	for k := range changed {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// KeyFor is the view key of a Consul KV key under the spec prefix.
func (v *View) KeyFor(kvKey string) (Key, error) {
	rest, ok := strings.CutPrefix(kvKey, v.prefix)
	if !ok {
		return Key{}, fmt.Errorf("key %q is outside %q", kvKey, v.prefix)
	}
	plural, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Key{}, fmt.Errorf("key %q is not <kind>/<name>", kvKey)
	}
	kind := spec.KindForPlural(plural)
	if kind == "" || spec.Plural(kind) != plural {
		return Key{}, fmt.Errorf("key %q: unknown kind %q", kvKey, plural)
	}
	return Key{Kind: kind, Name: name}, nil
}

// parseStored decodes a document found at k and checks that it belongs there.
func parseStored(k Key, value []byte) (spec.Object, error) {
	docs, err := ParseDocuments(value)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("value holds %d documents, want exactly 1", len(docs))
	}
	obj := docs[0].Object
	var problems []string
	if obj.GetKind() != k.Kind {
		problems = append(problems, fmt.Sprintf("kind: %s document stored under %s/ (want kind %s)", obj.GetKind(), spec.Plural(k.Kind), k.Kind))
	}
	if obj.GetName() != k.Name {
		problems = append(problems, fmt.Sprintf("metadata.name: %q differs from the key's last segment %q", obj.GetName(), k.Name))
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return obj, nil
}

// Synced is closed once the view has been filled from a successful read, so
// nothing acts on an empty view that was merely never read.
func (v *View) Synced() <-chan struct{} { return v.synced }

// Get returns the document in force for k.
func (v *View) Get(k Key) (*Doc, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	d, ok := v.docs[k]
	return d, ok
}

// Invalid returns the error of the latest version of k, if it is invalid.
func (v *View) Invalid(k Key) (*DocError, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.invalid[k]
	return e, ok
}

// List returns the documents in force of one kind, sorted by name.
func (v *View) List(kind string) []*Doc {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []*Doc
	for k, d := range v.docs {
		if k.Kind == kind {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Name < out[j].Key.Name })
	return out
}

// Keys returns every key known to the view, valid or not.
func (v *View) Keys() []Key {
	v.mu.RLock()
	defer v.mu.RUnlock()
	set := map[Key]bool{}
	for k := range v.docs {
		set[k] = true
	}
	for k := range v.invalid {
		set[k] = true
	}
	out := make([]Key, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// Held is the number of documents kept in force because the spec prefix
// read empty.
func (v *View) Held() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.held
}

// VLAN returns the VLAN document in force named name.
func (v *View) VLAN(name string) (*spec.VLAN, bool) {
	d, ok := v.Get(Key{Kind: spec.KindVLAN, Name: name})
	if !ok {
		return nil, false
	}
	return d.Object.(*spec.VLAN), true
}

// Host returns the Host document in force named name.
func (v *View) Host(name string) (*spec.Host, bool) {
	d, ok := v.Get(Key{Kind: spec.KindHost, Name: name})
	if !ok {
		return nil, false
	}
	return d.Object.(*spec.Host), true
}

func sortKeys(ks []Key) {
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].Kind != ks[j].Kind {
			return ks[i].Kind < ks[j].Kind
		}
		return ks[i].Name < ks[j].Name
	})
}
