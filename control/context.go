package control

import "context"

type tokenNameKey struct{}

func withTokenName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, tokenNameKey{}, name)
}

// TokenName is the name (never the secret) of the token that authorised the request, for
// audit logs in handlers added with Handle; empty on public routes.
func TokenName(ctx context.Context) string { return tokenName(ctx) }

func tokenName(ctx context.Context) string {
	n, _ := ctx.Value(tokenNameKey{}).(string)
	return n
}
