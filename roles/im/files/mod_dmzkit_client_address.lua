-- Each client's address and port as this server observed them on the
-- connection (inside a VPN tunnel: the tunnel's address), recorded for the
-- session and added to the presence it sends:
--
--   <presence from="alice@im.example/laptop">
--     <client-address xmlns="urn:dmzkit:xmpp:client-address:0" ip="198.18.9.1" port="41532"/>
--   </presence>
--
-- An element of this namespace that a client puts in its own presence is
-- removed first: buddies see only what the server saw.
local xmlns = "urn:dmzkit:xmpp:client-address:0";

module:hook("resource-bind", function (event)
	local session = event.session;
	local port = session.conn and session.conn:port();
	session.dmzkit_client_address = { ip = session.ip, port = port and tostring(port) };
	module:log("info", "%s connected from %s port %s", session.full_jid, session.ip, port);
end);

local function stamp(event)
	local origin, stanza = event.origin, event.stanza;
	stanza:remove_children("client-address", xmlns);
	local seen = origin.dmzkit_client_address;
	if seen and seen.ip and seen.port and stanza.attr.type == nil then
		stanza:tag("client-address", { xmlns = xmlns, ip = seen.ip, port = seen.port }):up();
	end
end

-- Before mod_presence broadcasts it or keeps it for probes.
module:hook("pre-presence/bare", stamp, 1000);
module:hook("pre-presence/full", stamp, 1000);
module:hook("pre-presence/host", stamp, 1000);
