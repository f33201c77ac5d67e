"""SAML artifact single sign-on (seed 003): the IdP, the SAML proxy for C/S
applications and the service-provider side, on a narrow SAML core."""
