package host

// RegistrationGoneForTest exposes registrationGone to the external tests.
var RegistrationGoneForTest = registrationGone

// The link alias mark and the swarm executor's service label, for the
// external tests.
const (
	AliasPrefixForTest      = hostAliasPrefix
	LabelServiceNameForTest = registrationLabelServiceName
)
