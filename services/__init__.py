"""The xinfang services. Each is a package of the same few roles: app, api, service, domain, tables."""
