package host

// The link alias mark and the swarm executor's service label, for the
// external tests.
const (
	AliasPrefixForTest      = aliasPrefix
	LabelServiceNameForTest = registrationLabelServiceName
)
