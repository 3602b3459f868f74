// Package tenancy names the tenants PDS knows before tenant management exists.
package tenancy

// DefaultTenantID is the tenant every request belongs to until requests carry a tenant of their own. The
// first migration creates it.
const DefaultTenantID = "00000000-0000-0000-0000-000000000001"
