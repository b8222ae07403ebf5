package natsauth

// Clients is how many clients a's record holds, for the external tests.
func Clients(a *Authenticator) int { return a.clients() }
