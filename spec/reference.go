package spec

import (
	"regexp"
	"strings"
)

// The grammar of Docker image references (github.com/distribution/reference),
// kept here as expressions so spec needs no Docker module. Only sha256
// digests are accepted: it is the one algorithm registries use.
const (
	refPathComponent   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	refDomainComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	refDomain          = `(?:` + refDomainComponent + `(?:\.` + refDomainComponent + `)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
	refName            = `(?:` + refDomain + `/)?` + refPathComponent + `(?:/` + refPathComponent + `)*`
	refTag             = `[\w][\w.-]{0,127}`
	refDigest          = `sha256:[a-f0-9]{64}`

	// ImageReferencePattern matches a valid image reference.
	ImageReferencePattern = `^` + refName + `(?::` + refTag + `)?(?:@` + refDigest + `)?$`
)

var (
	imageRefRe  = regexp.MustCompile(ImageReferencePattern)
	imageNameRe = regexp.MustCompile(`^(` + refName + `)`)
	// imageIDRe is a bare image ID, which Docker refuses as a repository
	// name (it would be ambiguous with the ID).
	imageIDRe = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

// maxImagePathLength is Docker's limit on a repository's path: the name
// without its registry, after normalisation ("web" is "library/web" on
// docker.io).
const maxImagePathLength = 255

// ValidImageReference reports whether s is a Docker image reference that
// Swarm accepts (distribution/reference's ParseNormalizedNamed):
// [registry-host[:port]/]path[:tag][@sha256:digest], path components in
// lowercase, not a bare 64-hex image ID, the path at most 255 characters
// once a Docker Hub name has its library/ prefix.
func ValidImageReference(s string) bool {
	if !imageRefRe.MatchString(s) || imageIDRe.MatchString(s) {
		return false
	}
	return len(imagePath(imageNameRe.FindString(s))) <= maxImagePathLength
}

// imagePath is the repository path of a name as Docker normalises it: the
// first component is a registry when it is localhost, holds '.' or ':', or
// has uppercase letters; a name on Docker Hub with one component is under
// library/.
func imagePath(name string) string {
	first, rest, ok := strings.Cut(name, "/")
	hub := true
	path := name
	if ok && (first == "localhost" || strings.ContainsAny(first, ".:") || strings.ToLower(first) != first) {
		path = rest
		hub = first == "docker.io" || first == "index.docker.io"
	}
	if hub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return path
}
