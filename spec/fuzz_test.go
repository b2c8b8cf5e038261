package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeAll feeds arbitrary bytes to the decoder. It must never panic,
// must report failures as an ErrorList, and every document it returns must
// survive a round trip: its JSON encoding and its own Raw text both decode
// again to the same canonical form. Validation, defaults and the range plan
// run on every decoded document too, since they see the same untrusted
// input.
func FuzzDecodeAll(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		for _, data := range readTestdata(f, dir) {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := DecodeAll(data)
		if err != nil {
			var l ErrorList
			if !errors.As(err, &l) || len(l) == 0 {
				t.Fatalf("error %T %q is not a non-empty ErrorList", err, err)
			}
			if docs != nil {
				t.Fatal("documents returned with an error")
			}
			return
		}
		for _, d := range docs {
			b, err := json.Marshal(d.Object)
			if err != nil {
				t.Fatalf("document %d: marshal: %v", d.Index, err)
			}
			fromJSON, err := Canonical(b)
			if err != nil {
				t.Fatalf("document %d: canonical of its JSON %s: %v", d.Index, b, err)
			}
			fromRaw, err := Canonical(d.Raw)
			if err != nil {
				t.Fatalf("document %d: canonical of its Raw %q: %v", d.Index, d.Raw, err)
			}
			if !bytes.Equal(fromJSON, fromRaw) {
				t.Fatalf("document %d: Raw gives\n%s\nJSON gives\n%s", d.Index, fromRaw, fromJSON)
			}
			before := Validate(d.Object)
			SetDefaults(d.Object)
			after := Validate(d.Object)
			if (before == nil) != (after == nil) {
				t.Fatalf("document %d: valid before defaults %v, after %v", d.Index, before == nil, after == nil)
			}
			if v, ok := d.Object.(*VLAN); ok {
				p, err := v.Plan()
				if err == nil && len(p.Chunks) > MaxChunks {
					t.Fatalf("plan has %d chunks, more than MaxChunks", len(p.Chunks))
				}
			}
		}
	})
}
