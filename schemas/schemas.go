// Package schemas holds the JSON Schemas (draft 2020-12) of the documents
// users write, one per kind, for editors and CI pipelines that check
// documents without running swarmvlan. The schemas express what JSON Schema
// can (types, unknown fields, enums, ranges, patterns); relations such as
// "the gateway lies inside the subnet" are checked by spec.Validate only. A
// test keeps the schemas in step with the Go types in spec.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"swarmvlan/spec"
)

//go:embed *.schema.json
var files embed.FS

// File returns the schema file of a kind ("VLAN", "vlans", "vlan", ...), or
// nil for an unknown kind.
func File(kind string) []byte {
	name := fileName(spec.KindForPlural(kind))
	if name == "" {
		return nil
	}
	b, err := files.ReadFile(name)
	if err != nil {
		return nil
	}
	return b
}

func fileName(kind string) string {
	if kind == "" {
		return ""
	}
	return strings.ToLower(kind) + ".schema.json"
}

// compiled holds the compiled schema of every kind; compiling is slow
// enough to do once.
var compiled = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	ids := map[string]string{}
	for _, k := range spec.Kinds {
		b, err := files.ReadFile(fileName(k))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("schema %s: no $id", k)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		ids[k] = id
	}
	out := map[string]*jsonschema.Schema{}
	for k, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("schema %s: compile: %w", k, err)
		}
		out[k] = s
	}
	return out, nil
})

// Validate checks doc, a document decoded to generic JSON values (maps,
// slices, strings, numbers, booleans), against the schema of kind. The error
// is a spec.ErrorList of "path: message" problems, paths written as
// spec.Validate writes them (spec.rangePlan.pool[1]).
func Validate(kindName string, doc any) error {
	k := spec.KindForPlural(kindName)
	if k == "" {
		return spec.ErrorList{{Path: "kind", Msg: fmt.Sprintf("unknown kind %q (one of %s)", kindName, strings.Join(spec.Kinds, ", "))}}
	}
	all, err := compiled()
	if err != nil {
		return err
	}
	err = all[k].Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("schema %s: %w", k, err)
	}
	var errs spec.ErrorList
	collect(ve, doc, goTypes[k], &errs)
	if len(errs) == 0 {
		// Not expected: every failure has at least one leaf.
		errs = append(errs, &spec.FieldError{Msg: ve.Error()})
	}
	return errs
}

// ValidateBytes decodes every document in data with spec's strict decoder
// and checks each against the schema of its kind. Problems in a file of
// several documents are prefixed with the document's number.
func ValidateBytes(data []byte) error {
	docs, err := spec.DecodeAll(data)
	if err != nil {
		return err
	}
	var errs spec.ErrorList
	for _, d := range docs {
		b, err := json.Marshal(d.Object)
		if err != nil {
			return fmt.Errorf("document %d: encode: %w", d.Index+1, err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("document %d: re-decode: %w", d.Index+1, err)
		}
		for _, e := range spec.AsErrorList(Validate(d.Object.GetKind(), v)) {
			if len(docs) > 1 {
				e = prefixed(d.Index, e)
			}
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func prefixed(i int, e *spec.FieldError) *spec.FieldError {
	p := "document " + strconv.Itoa(i+1)
	if e.Path != "" {
		p += ": " + e.Path
	}
	return &spec.FieldError{Path: p, Msg: e.Msg}
}

var printer = message.NewPrinter(language.English)

// goTypes are the Go types of the documents, used to tell a map (whose keys
// the user chooses) from a struct (whose keys are field names).
var goTypes = map[string]reflect.Type{
	spec.KindVLAN:    reflect.TypeFor[spec.VLAN](),
	spec.KindService: reflect.TypeFor[spec.Service](),
	spec.KindHost:    reflect.TypeFor[spec.Host](),
}

// collect turns a tree of schema failures into field problems: the leaves,
// except where a node's own message says more than its parts (unknown and
// missing properties, alternatives none of which matched).
//
// The schemas state key rules as patternProperties, never propertyNames:
// this library reports a propertyNames failure with a location slice that
// later validation may overwrite, so its path cannot be trusted.
func collect(e *jsonschema.ValidationError, doc any, typ reflect.Type, errs *spec.ErrorList) {
	p := fieldPath(doc, e.InstanceLocation)
	add := func(path, msg string) {
		fe := &spec.FieldError{Path: path, Msg: msg}
		if !slices.ContainsFunc(*errs, func(o *spec.FieldError) bool { return *o == *fe }) {
			*errs = append(*errs, fe)
		}
	}
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		msg := "unknown field"
		if isMap(typ, e.InstanceLocation) {
			msg = "invalid key"
		}
		for _, name := range k.Properties {
			add(spec.KeyPath(p, name), msg)
		}
		return
	case *kind.Required:
		for _, name := range k.Missing {
			add(spec.KeyPath(p, name), "required")
		}
		return
	case *kind.FalseSchema:
		if n := len(e.InstanceLocation); n > 0 && isMap(typ, e.InstanceLocation[:n-1]) {
			add(p, "key is reserved")
		} else {
			add(p, "not allowed here")
		}
		return
	case *kind.Not:
		add(p, "matches a form that is not allowed")
		return
	case *kind.AnyOf, *kind.OneOf:
		add(p, "does not match any allowed form")
		return
	}
	if len(e.Causes) == 0 {
		add(p, e.ErrorKind.LocalizedString(printer))
		return
	}
	for _, c := range e.Causes {
		collect(c, doc, typ, errs)
	}
}

// isMap reports whether the value at a JSON pointer's tokens is a Go map in
// the document type typ.
func isMap(typ reflect.Type, tokens []string) bool {
	for _, t := range tokens {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		switch typ.Kind() {
		case reflect.Struct:
			f, ok := fieldByJSONName(typ, t)
			if !ok {
				return false
			}
			typ = f.Type
		case reflect.Map, reflect.Slice:
			typ = typ.Elem()
		default:
			return false
		}
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	return typ.Kind() == reflect.Map
}

func fieldByJSONName(typ reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if n == name || n == "" && f.Name == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// fieldPath converts a JSON pointer's tokens into a spec field path, using
// the document to tell list indexes from object keys.
func fieldPath(doc any, tokens []string) string {
	p := ""
	cur := doc
	for _, t := range tokens {
		switch v := cur.(type) {
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(v) {
				p = spec.KeyPath(p, t)
				cur = nil
				continue
			}
			p = spec.IndexPath(p, i)
			cur = v[i]
		case map[string]any:
			p = spec.KeyPath(p, t)
			cur = v[t]
		default:
			p = spec.KeyPath(p, t)
			cur = nil
		}
	}
	return p
}
