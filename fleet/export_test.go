package fleet

// MaxErrorKinds is maxErrorKinds, for the external tests.
const MaxErrorKinds = maxErrorKinds
