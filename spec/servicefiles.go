package spec

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode"
)

// FileRef is an existing Swarm secret or config, by name, given to the
// task as a file. A document may write a bare name ("db_password") for
// {name: db_password}: the file is then where the docker CLI puts it, owned
// by root and readable by all.
type FileRef struct {
	Name string `json:"name"`
	// Target is where the file appears. For a secret, a file name under
	// /run/secrets/ or an absolute path; for a config, an absolute path
	// or a path under /. Empty is the name (/run/secrets/<name>, /<name>).
	Target string `json:"target,omitempty"`
	// UID and GID own the file (default 0).
	UID *int `json:"uid,omitempty"`
	GID *int `json:"gid,omitempty"`
	// Mode is the file's permission bits, 0-0777 (YAML reads 0440 as
	// octal); default 0444.
	Mode *int `json:"mode,omitempty"`
}

// DefaultFileMode is the mode of a secret or config file a document gives
// none for, as the docker CLI sets it.
const DefaultFileMode = 0o444

// maxFileID bounds uid and gid: Docker parses them as a C int.
const maxFileID = 1<<31 - 1

// setName lets the decoder take a bare string for the whole reference.
func (f *FileRef) setName(s string) { *f = FileRef{Name: s} }

// MarshalJSON writes a reference that holds only a name as the bare name,
// as the document may write it.
func (f FileRef) MarshalJSON() ([]byte, error) {
	if f.Target == "" && f.UID == nil && f.GID == nil && f.Mode == nil {
		return json.Marshal(f.Name)
	}
	type plain FileRef
	return json.Marshal(plain(f))
}

// UnmarshalJSON reads a bare name or the object.
func (f *FileRef) UnmarshalJSON(b []byte) error {
	var name string
	if json.Unmarshal(b, &name) == nil {
		f.setName(name)
		return nil
	}
	type plain FileRef
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*f = FileRef(p)
	return nil
}

// SecretTarget is the file name Docker is given for a secret: the target,
// or the name (a name Docker puts under /run/secrets/).
func (f FileRef) SecretTarget() string {
	if f.Target != "" {
		return f.Target
	}
	return f.Name
}

// ConfigTarget is the absolute path of a config's file: the target, under
// / when relative, or /<name>.
func (f FileRef) ConfigTarget() string {
	t := f.Target
	if t == "" {
		t = f.Name
	}
	if !path.IsAbs(t) {
		t = "/" + t
	}
	return t
}

// Owner is the file's UID and GID as Docker takes them (decimal strings).
func (f FileRef) Owner() (uid, gid string) {
	uid, gid = "0", "0"
	if f.UID != nil {
		uid = strconv.Itoa(*f.UID)
	}
	if f.GID != nil {
		gid = strconv.Itoa(*f.GID)
	}
	return uid, gid
}

// FileMode is the file's mode, DefaultFileMode when unset.
func (f FileRef) FileMode() uint32 {
	if f.Mode == nil {
		return DefaultFileMode
	}
	return uint32(*f.Mode)
}

// SecretNames returns the names of the secrets a service refers to.
func (s *ServiceSpec) SecretNames() []string {
	out := make([]string, 0, len(s.Secrets))
	for _, f := range s.Secrets {
		out = append(out, f.Name)
	}
	return out
}

// ConfigNames returns the names of the configs a service refers to.
func (s *ServiceSpec) ConfigNames() []string {
	out := make([]string, 0, len(s.Configs))
	for _, f := range s.Configs {
		out = append(out, f.Name)
	}
	return out
}

// validateFiles checks secrets and configs: Docker names, targets that
// stay where Docker puts them, one file per target, owner and mode.
func validateFiles(errs *ErrorList, s *ServiceSpec) {
	targets := map[string]string{}
	for i, f := range s.Secrets {
		validateFileRef(errs, IndexPath("spec.secrets", i), "secret", f, true, targets)
	}
	for i, f := range s.Configs {
		validateFileRef(errs, IndexPath("spec.configs", i), "config", f, false, targets)
	}
}

func validateFileRef(errs *ErrorList, p, kind string, f FileRef, secret bool, targets map[string]string) {
	switch {
	case f.Name == "":
		errs.add(p, "must not be empty")
		return
	case len(f.Name) > 64 || !secretNameRe.MatchString(f.Name):
		errs.add(p, fmt.Sprintf("%q is not a Docker %s name: 1-64 letters, digits, '_', '.' or '-', starting and ending with a letter or digit", f.Name, kind))
		return
	}
	if t := f.Target; t != "" {
		tp := p + ".target"
		switch {
		case strings.IndexFunc(t, unicode.IsControl) >= 0:
			errs.add(tp, "must not contain control characters")
			return
		case path.Clean(t) != t || strings.HasSuffix(t, "/"):
			errs.add(tp, fmt.Sprintf("%q is not a clean path (no '..', '.', '//' or trailing '/')", t))
			return
		case t == "/" || t == "." || t == ".." || strings.HasPrefix(t, "../"):
			errs.add(tp, fmt.Sprintf("%q is not a file", t))
			return
		case secret && !path.IsAbs(t) && strings.Contains(t, "/"):
			errs.add(tp, fmt.Sprintf("%q must be a file name (under /run/secrets/) or an absolute path", t))
			return
		}
	}
	var full string
	if secret {
		full = f.SecretTarget()
		if !path.IsAbs(full) {
			full = "/run/secrets/" + full
		}
	} else {
		full = f.ConfigTarget()
	}
	if other, ok := targets[full]; ok {
		if f.Target == "" {
			errs.add(p, fmt.Sprintf("%s is listed twice: its file %s is also %s's", f.Name, full, other))
		} else {
			errs.add(p+".target", fmt.Sprintf("%s is also %s's file", full, other))
		}
	} else {
		targets[full] = p
	}
	for _, id := range []struct {
		field string
		v     *int
	}{{"uid", f.UID}, {"gid", f.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > maxFileID) {
			errs.add(p+"."+id.field, fmt.Sprintf("must be between 0 and %d", maxFileID))
		}
	}
	if f.Mode != nil && (*f.Mode < 0 || *f.Mode > 0o777) {
		errs.add(p+".mode", fmt.Sprintf("must be permission bits between 0 and 0777 (octal), not %#o", *f.Mode))
	}
}
