package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Document is one decoded document of a file.
type Document struct {
	Object Object
	// Raw is this document's own text, as the user wrote it (for a
	// multi-document YAML file, only this document's part), so it can be
	// stored in Consul unchanged.
	Raw []byte
	// Index is the document's position among the non-empty documents of
	// the file, from 0; errors call it "document Index+1".
	Index int
}

// Limits that keep a hostile document from exhausting memory or the stack:
// the documents are small, so anything beyond these is a mistake or an attack
// (YAML aliases can multiply a small text into a huge tree).
const (
	maxDepth = 64
	maxNodes = 20000
)

// DecodeAll decodes every document in data: a JSON object (or a stream of
// them), or YAML with documents separated by "---". Empty documents are
// skipped. Decoding is strict: unknown fields, duplicate keys and values of
// the wrong type are errors naming their field path, as are an unknown or
// missing kind and a wrong apiVersion. The error is an ErrorList holding every
// problem of every document; in a file with several documents each path is
// prefixed with the document's number ("document 2: spec.id").
func DecodeAll(data []byte) ([]Document, error) {
	raws := split(data)
	multi := len(raws) > 1
	var docs []Document
	var errs ErrorList
	for i, r := range raws {
		docErrs := r.errs
		var obj Object
		if r.node != nil {
			var objErrs ErrorList
			obj, objErrs = decodeObject(r.node)
			docErrs = append(docErrs, objErrs...)
		}
		if len(docErrs) > 0 {
			for _, e := range docErrs {
				if multi {
					e = documentError(i, e)
				}
				errs = append(errs, e)
			}
			continue
		}
		docs = append(docs, Document{Object: obj, Raw: r.raw, Index: i})
	}
	if len(errs) > 0 {
		return nil, errs.truncated()
	}
	return docs, nil
}

func documentError(i int, e *FieldError) *FieldError {
	prefix := "document " + strconv.Itoa(i+1)
	if e.Path == "" {
		return &FieldError{Path: prefix, Msg: e.Msg}
	}
	return &FieldError{Path: prefix + ": " + e.Path, Msg: e.Msg}
}

// Decode decodes data that must hold exactly one document.
func Decode(data []byte) (Object, error) {
	docs, err := DecodeAll(data)
	if err != nil {
		return nil, err
	}
	switch len(docs) {
	case 0:
		return nil, ErrorList{{Msg: "no document found"}}
	case 1:
		return docs[0].Object, nil
	}
	return nil, ErrorList{{Msg: fmt.Sprintf("want one document, found %d", len(docs))}}
}

// Canonical returns the canonical JSON of the single document in data: the
// decoded fields only, object keys sorted, no insignificant whitespace. Two
// texts that differ only in format (YAML or JSON, key order, quoting,
// comments) have the same canonical form. Defaults are not applied, so an
// explicit default still counts as a change of what the user wrote.
func Canonical(data []byte) ([]byte, error) {
	obj, err := Decode(data)
	if err != nil {
		return nil, err
	}
	return canonicalJSON(obj)
}

func canonicalJSON(obj Object) ([]byte, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s %q: encode: %w", lower(obj.GetKind()), obj.GetName(), err)
	}
	// Structs marshal in declaration order; a generic value marshals with
	// sorted keys.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s %q: re-decode: %w", lower(obj.GetKind()), obj.GetName(), err)
	}
	return json.Marshal(v)
}

// node is a parsed document, independent of the input format, so JSON and
// YAML go through the same strict typed decoding.
type node struct {
	kind  nodeKind
	typ   scalarType // for scalars
	text  string     // for scalars: the value, numbers normalised to decimal
	keys  []string   // for objects, in input order
	vals  []*node    // for objects
	items []*node    // for lists
}

type nodeKind int

const (
	nullNode nodeKind = iota
	scalarNode
	objectNode
	listNode
)

type scalarType int

const (
	stringScalar scalarType = iota
	intScalar
	floatScalar
	boolScalar
)

// rawDoc is one document as split from the input, before typed decoding.
type rawDoc struct {
	raw  []byte
	node *node
	errs ErrorList
}

// split cuts data into documents and parses each into a node tree.
func split(data []byte) []rawDoc {
	// A byte order mark is not part of any document's text.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	if looksLikeJSON(data) {
		docs, err := splitJSON(data)
		if err != nil {
			return []rawDoc{{raw: data, errs: ErrorList{{Msg: err.Error()}}}}
		}
		return docs
	}
	return splitYAML(data)
}

// looksLikeJSON tells JSON from YAML that starts with a flow mapping: JSON
// quotes its first key ({"apiVersion": ...}), YAML written by hand does not
// ({apiVersion: ...}). Deciding up front means broken JSON gets a JSON syntax
// error rather than whatever YAML makes of it.
func looksLikeJSON(data []byte) bool {
	const space = " \t\r\n"
	b := bytes.TrimLeft(data, space)
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	b = bytes.TrimLeft(b[1:], space)
	return len(b) > 0 && (b[0] == '"' || b[0] == '}')
}

// splitJSON parses a stream of JSON values. The error is a syntax error;
// problems such as duplicate keys are reported in the documents.
func splitJSON(data []byte) ([]rawDoc, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var docs []rawDoc
	var end int64
	for {
		c := &jsonConv{dec: dec}
		n, err := c.value("", 0)
		if err == io.EOF && c.started == 0 {
			return docs, nil
		}
		if err != nil {
			return nil, jsonSyntaxError(data, dec.InputOffset(), err)
		}
		start := end
		end = dec.InputOffset()
		docs = append(docs, rawDoc{raw: bytes.TrimSpace(data[start:end]), node: n, errs: c.errs})
	}
}

func jsonSyntaxError(data []byte, offset int64, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		offset = se.Offset
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = errors.New("unexpected end of JSON input")
	}
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	line := 1 + bytes.Count(data[:offset], []byte("\n"))
	return fmt.Errorf("line %d: %w", line, err)
}

type jsonConv struct {
	dec     *json.Decoder
	errs    ErrorList
	started int
}

func (c *jsonConv) value(path string, depth int) (*node, error) {
	tok, err := c.dec.Token()
	if err != nil {
		return nil, err
	}
	c.started++
	return c.fromToken(tok, path, depth)
}

func (c *jsonConv) fromToken(tok json.Token, path string, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d levels deep", maxDepth)
	}
	switch t := tok.(type) {
	case nil:
		return &node{kind: nullNode}, nil
	case bool:
		return &node{kind: scalarNode, typ: boolScalar, text: strconv.FormatBool(t)}, nil
	case string:
		return &node{kind: scalarNode, typ: stringScalar, text: t}, nil
	case json.Number:
		s := string(t)
		if strings.ContainsAny(s, ".eE") {
			return &node{kind: scalarNode, typ: floatScalar, text: s}, nil
		}
		return &node{kind: scalarNode, typ: intScalar, text: s}, nil
	case json.Delim:
		switch t {
		case '{':
			n := &node{kind: objectNode}
			seen := map[string]bool{}
			for c.dec.More() {
				kt, err := c.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is %v, not a string", kt)
				}
				kp := KeyPath(path, key)
				v, err := c.value(kp, depth+1)
				if err != nil {
					return nil, err
				}
				if seen[key] {
					c.errs.add(kp, "duplicate key")
					continue
				}
				seen[key] = true
				n.keys = append(n.keys, key)
				n.vals = append(n.vals, v)
			}
			if _, err := c.dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		case '[':
			n := &node{kind: listNode}
			for c.dec.More() {
				v, err := c.value(IndexPath(path, len(n.items)), depth+1)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, v)
			}
			if _, err := c.dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		}
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// chunk is the text of one YAML document.
type chunk struct {
	start, end int
	line       int // line number of start, from 1
}

// splitYAML cuts data at document markers and parses each part on its own,
// so every document keeps exactly its own text. A "---" or "..." at the start
// of a line always ends a document in YAML, even inside a scalar, so cutting
// the text there agrees with the parser.
func splitYAML(data []byte) []rawDoc {
	var chunks []chunk
	cur := chunk{start: 0, line: 1}
	content := false    // cur has a line other than blanks, comments and directives
	directives := false // cur has directives ("%YAML 1.2") waiting for their "---"
	pos, lineNo := 0, 1
	for pos < len(data) {
		eol := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if eol >= 0 {
			next = pos + eol + 1
		}
		line := data[pos:next]
		switch {
		case isMarker(line, "---"):
			if directives {
				// Directives belong to the document this marker starts.
				directives, content = false, true
				break
			}
			cur.end = pos
			chunks = append(chunks, cur)
			if rest := line[3:]; isBlankOrComment(rest) {
				cur = chunk{start: next, line: lineNo + 1}
				content = false
			} else {
				cur = chunk{start: pos, line: lineNo}
				content = true
			}
		case isMarker(line, "..."):
			cur.end = pos
			chunks = append(chunks, cur)
			cur = chunk{start: next, line: lineNo + 1}
			content, directives = false, false
		case line[0] == '%' && !content:
			directives = true
		case !isBlankOrComment(line):
			content = true
		}
		pos = next
		lineNo++
	}
	cur.end = len(data)
	chunks = append(chunks, cur)

	var docs []rawDoc
	for _, c := range chunks {
		docs = append(docs, parseYAMLChunk(data[c.start:c.end], c.line)...)
	}
	return docs
}

func isMarker(line []byte, marker string) bool {
	if !bytes.HasPrefix(line, []byte(marker)) {
		return false
	}
	rest := line[len(marker):]
	return len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r' || rest[0] == '\n'
}

// isBlankOrComment reports whether a line holds nothing but white space
// and perhaps a comment.
func isBlankOrComment(line []byte) bool {
	line = bytes.TrimSpace(line)
	return len(line) == 0 || line[0] == '#'
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parseYAMLChunk parses one document's text; line is where the text starts
// in the file, so error messages give the file's line numbers.
func parseYAMLChunk(text []byte, line int) (docs []rawDoc) {
	fileLines := func(msg string) string {
		msg = strings.TrimPrefix(msg, "yaml: ")
		return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
			n, err := strconv.Atoi(m[len("line "):])
			if err != nil {
				return m
			}
			return "line " + strconv.Itoa(n+line-1)
		})
	}
	defer func() {
		// The YAML parser is third-party code fed with untrusted text; a
		// panic in it must be a rejected document, not a crashed reconciler.
		if r := recover(); r != nil {
			docs = []rawDoc{{raw: text, errs: ErrorList{{Msg: fileLines(fmt.Sprintf("yaml: line 1: cannot parse: %v", r))}}}}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(text))
	var parsed []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return []rawDoc{{raw: text, errs: ErrorList{{Msg: fileLines(err.Error())}}}}
		}
		if isEmptyYAML(&n) {
			continue
		}
		parsed = append(parsed, &n)
	}
	switch len(parsed) {
	case 0:
		return nil
	case 1:
		c := &yamlConv{}
		n := c.conv(parsed[0], "", 0)
		return []rawDoc{{raw: text, node: n, errs: c.errs}}
	}
	return []rawDoc{{raw: text, errs: ErrorList{{Msg: fileLines(fmt.Sprintf("line %d: several documents without a --- line between them", parsed[1].Line))}}}}
}

func isEmptyYAML(n *yaml.Node) bool {
	if n.Kind == 0 {
		return true
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		c := n.Content[0]
		return c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null" && c.Value == "" && c.Style == 0
	}
	return false
}

type yamlConv struct {
	errs  ErrorList
	nodes int
	over  bool
}

func (c *yamlConv) conv(n *yaml.Node, path string, depth int) *node {
	c.nodes++
	if c.nodes > maxNodes || depth > maxDepth {
		if !c.over {
			c.over = true
			if depth > maxDepth {
				c.errs.add(path, fmt.Sprintf("nested more than %d levels deep", maxDepth))
			} else {
				// Where the count ran out says little, so the problem is the
				// document's.
				c.errs.add("", fmt.Sprintf("document too large: more than %d values, counting expanded aliases", maxNodes))
			}
		}
		return &node{kind: nullNode}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return &node{kind: nullNode}
		}
		return c.conv(n.Content[0], path, depth)
	case yaml.AliasNode:
		if n.Alias == nil {
			c.errs.add(path, "alias to an unknown anchor")
			return &node{kind: nullNode}
		}
		return c.conv(n.Alias, path, depth+1)
	case yaml.MappingNode:
		out := &node{kind: objectNode}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			for k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				c.errs.add(path, fmt.Sprintf("line %d: keys must be strings", k.Line))
				continue
			}
			if k.ShortTag() == "!!merge" {
				c.errs.add(path, fmt.Sprintf("line %d: merge keys (<<) are not supported", k.Line))
				continue
			}
			kp := KeyPath(path, k.Value)
			if seen[k.Value] {
				c.errs.add(kp, "duplicate key")
				continue
			}
			seen[k.Value] = true
			out.keys = append(out.keys, k.Value)
			out.vals = append(out.vals, c.conv(n.Content[i+1], kp, depth+1))
		}
		return out
	case yaml.SequenceNode:
		out := &node{kind: listNode}
		for i, item := range n.Content {
			out.items = append(out.items, c.conv(item, IndexPath(path, i), depth+1))
		}
		return out
	case yaml.ScalarNode:
		return c.scalar(n, path)
	}
	c.errs.add(path, "unsupported YAML node")
	return &node{kind: nullNode}
}

func (c *yamlConv) scalar(n *yaml.Node, path string) *node {
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return &node{kind: nullNode}
	case "!!str", "!!timestamp":
		// An unquoted date is still the text the user wrote.
		return &node{kind: scalarNode, typ: stringScalar, text: n.Value}
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			c.errs.add(path, "must be true or false")
			return &node{kind: nullNode}
		}
		return &node{kind: scalarNode, typ: boolScalar, text: strconv.FormatBool(b)}
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			// Out of range; the typed decoder says so if the field is an
			// integer.
			return &node{kind: scalarNode, typ: intScalar, text: n.Value}
		}
		return &node{kind: scalarNode, typ: intScalar, text: strconv.FormatInt(i, 10)}
	case "!!float":
		return &node{kind: scalarNode, typ: floatScalar, text: n.Value}
	default:
		c.errs.add(path, fmt.Sprintf("unsupported tag %s", tag))
		return &node{kind: nullNode}
	}
}

// decodeObject checks kind and apiVersion, then decodes the document into
// its type.
func decodeObject(n *node) (Object, ErrorList) {
	var errs ErrorList
	if n.kind != objectNode {
		errs.add("", "document must be an object with apiVersion, kind, metadata and spec")
		return nil, errs
	}
	field := func(name string) (*node, bool) {
		for i, k := range n.keys {
			if k == name {
				return n.vals[i], true
			}
		}
		return nil, false
	}
	apiVersion, ok := field("apiVersion")
	switch {
	case !ok || apiVersion.kind == nullNode:
		errs.add("apiVersion", "required (must be "+APIVersion+")")
	case apiVersion.kind != scalarNode || apiVersion.typ != stringScalar:
		errs.add("apiVersion", "must be a string")
	case apiVersion.text != APIVersion:
		errs.add("apiVersion", fmt.Sprintf("must be %s, not %q", APIVersion, apiVersion.text))
	}
	kind, ok := field("kind")
	var obj Object
	switch {
	case !ok || kind.kind == nullNode:
		errs.add("kind", "required (one of "+strings.Join(Kinds, ", ")+")")
	case kind.kind != scalarNode || kind.typ != stringScalar:
		errs.add("kind", "must be a string")
	default:
		switch kind.text {
		case KindVLAN:
			obj = &VLAN{}
		case KindService:
			obj = &Service{}
		case KindHost:
			obj = &Host{}
		default:
			errs.add("kind", fmt.Sprintf("unknown kind %q (one of %s)", kind.text, strings.Join(Kinds, ", ")))
		}
	}
	if obj == nil {
		return nil, errs
	}
	d := &typedDecoder{errs: errs}
	d.value(reflect.ValueOf(obj).Elem(), n, "")
	if len(d.errs) > 0 {
		return nil, dedupe(d.errs)
	}
	return obj, nil
}

// nameForm is a struct a document may also write as a bare string, its
// name: a secret "db_password" for {name: db_password}.
type nameForm interface{ setName(string) }

// typedDecoder fills Go values from a node tree, recording every mismatch
// with its path and carrying on, so one pass reports all of them.
type typedDecoder struct {
	errs ErrorList
}

func (d *typedDecoder) value(v reflect.Value, n *node, path string) {
	if n.kind == nullNode {
		v.SetZero()
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(p.Elem(), n, path)
		v.Set(p)
	case reflect.Struct:
		if nf, ok := v.Addr().Interface().(nameForm); ok && n.kind == scalarNode && n.typ == stringScalar {
			nf.setName(n.text)
			return
		}
		if n.kind != objectNode {
			d.errs.add(path, "must be an object")
			return
		}
		fields := jsonFields(v.Type())
		for i, key := range n.keys {
			kp := KeyPath(path, key)
			idx, ok := fields[key]
			if !ok {
				d.errs.add(kp, unknownField(key, fields))
				continue
			}
			d.value(v.Field(idx), n.vals[i], kp)
		}
	case reflect.Map:
		if n.kind != objectNode {
			d.errs.add(path, "must be an object")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.keys))
		for i, key := range n.keys {
			e := reflect.New(v.Type().Elem()).Elem()
			d.value(e, n.vals[i], KeyPath(path, key))
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	case reflect.Slice:
		if n.kind != listNode {
			d.errs.add(path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.items), len(n.items))
		for i, item := range n.items {
			d.value(s.Index(i), item, IndexPath(path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.kind != scalarNode || n.typ != stringScalar {
			if n.kind == scalarNode {
				d.errs.add(path, "must be a string (quote the value)")
			} else {
				d.errs.add(path, "must be a string")
			}
			return
		}
		v.SetString(n.text)
	case reflect.Int, reflect.Int64:
		if n.kind != scalarNode || n.typ != intScalar {
			d.errs.add(path, "must be an integer")
			return
		}
		i, err := strconv.ParseInt(n.text, 10, 64)
		if err != nil || v.OverflowInt(i) {
			d.errs.add(path, fmt.Sprintf("integer %s is out of range", n.text))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		if n.kind != scalarNode || n.typ != boolScalar {
			d.errs.add(path, "must be true or false")
			return
		}
		v.SetBool(n.text == "true")
	default:
		// Only reachable if a field of an unsupported Go type is added to
		// the document types; the tests decode every field.
		d.errs.add(path, fmt.Sprintf("field of Go type %s cannot be decoded", v.Type()))
	}
}

// dedupe drops repeated problems: apiVersion and kind are checked before the
// typed decoding and again by it.
func dedupe(errs ErrorList) ErrorList {
	seen := map[FieldError]bool{}
	out := errs[:0:0]
	for _, e := range errs {
		if !seen[*e] {
			seen[*e] = true
			out = append(out, e)
		}
	}
	return out
}

func unknownField(key string, fields map[string]int) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("unknown field (did you mean %q?)", name)
		}
	}
	return "unknown field"
}

var fieldCache sync.Map // reflect.Type -> map[string]int

// jsonFields maps the json names of a struct's fields to their index.
func jsonFields(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := jsonName(f)
		if name == "-" {
			continue
		}
		m[name] = i
	}
	fieldCache.Store(t, m)
	return m
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return f.Name
	}
	return name
}
