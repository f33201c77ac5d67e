-- Each client's address and port as this server observed them on the
-- connection (inside a VPN tunnel: the tunnel's address), recorded for the
-- session and added to the presence it sends to its contacts (broadcast,
-- probe answers, and directed presence to a contact it shares presence
-- with; never to others):
--
--   <presence from="alice@im.example/laptop">
--     <client-address xmlns="urn:dmzkit:xmpp:client-address:0" ip="198.18.9.1" port="41532"/>
--   </presence>
--
-- Every element of this namespace that a client puts anywhere in any of its
-- stanzas is removed first: what others see is only what the server saw.
local jid_bare = require "util.jid".bare;
local xmlns = "urn:dmzkit:xmpp:client-address:0";

module:hook("resource-bind", function (event)
	local session = event.session;
	local port = session.conn and session.conn:port();
	session.dmzkit_client_address = { ip = session.ip, port = port and tostring(port) };
	module:log("info", "%s connected from %s port %s", session.full_jid, session.ip, port);
end);

local function strip(tag)
	tag:maptags(function (child)
		if child.attr.xmlns == xmlns then
			return nil;
		end
		strip(child);
		return child;
	end);
end

-- Every stanza from a client, before anything else handles it.
module:hook("pre-stanza", function (event)
	if event.origin.type == "c2s" then
		strip(event.stanza);
	end
end, 1000);

-- Whether the recipient shares the sender's presence: the sender's own
-- resources, or a contact subscribed to it (from or both).
local function shares_presence(origin, to)
	if to == nil then
		return true;
	end
	local bare = jid_bare(to);
	if bare == origin.username .. "@" .. origin.host then
		return true;
	end
	local item = origin.roster and origin.roster[bare];
	return item ~= nil and (item.subscription == "both" or item.subscription == "from");
end

local function stamp(event)
	local origin, stanza = event.origin, event.stanza;
	local seen = origin.dmzkit_client_address;
	if seen and seen.ip and seen.port and stanza.attr.type == nil and shares_presence(origin, stanza.attr.to) then
		stanza:tag("client-address", { xmlns = xmlns, ip = seen.ip, port = seen.port }):up();
	end
end

-- Before mod_presence broadcasts it, answers probes with it or keeps it.
module:hook("pre-presence/bare", stamp, 1000);
module:hook("pre-presence/full", stamp, 1000);
module:hook("pre-presence/host", stamp, 1000);
