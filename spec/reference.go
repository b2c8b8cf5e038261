package spec

import "regexp"

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
)

// maxImageNameLength is Docker's limit on the name part of a reference.
const maxImageNameLength = 255

// ValidImageReference reports whether s is a Docker image reference:
// [registry-host[:port]/]path[:tag][@sha256:digest], path components in
// lowercase.
func ValidImageReference(s string) bool {
	if !imageRefRe.MatchString(s) {
		return false
	}
	return len(imageNameRe.FindString(s)) <= maxImageNameLength
}
