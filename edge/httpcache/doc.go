// Package httpcache holds the RFC 9111 caching rules as pure functions: parsing Cache-Control,
// deciding what is storable, freshness lifetime and age, cache keys with Vary (Accept-Encoding
// normalised), and the RFC 9211 Cache-Status field.
//
// It imports only the standard library and keeps no state: the edge calls it on every request,
// so the hit-path functions (ParseCacheControl, Key) avoid allocating.
package httpcache
