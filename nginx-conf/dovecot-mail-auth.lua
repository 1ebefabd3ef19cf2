-- Dovecot (>= 2.3.19, dovecot-auth-lua + lua-cjson) passdb, userdb and userdb iterate that ask
-- ngx-mail-auth's `mail_auth_json` location (a Nauthilus-compatible JSON API), so one
-- credential store serves nginx's mail proxy and the Dovecot behind it.
--
--   passdb {
--     driver = lua
--     args = file=/etc/dovecot/dovecot-mail-auth.lua blocking=yes
--   }
--   userdb {
--     driver = lua
--     args = file=/etc/dovecot/dovecot-mail-auth.lua blocking=yes
--   }
--   import_environment = $import_environment MAIL_AUTH_JSON_URL=http://127.0.0.1:9180/dovecot \
--       MAIL_AUTH_JSON_CREDENTIALS=/etc/dovecot/mail-auth-json.secret
--
-- MAIL_AUTH_JSON_CREDENTIALS names a file holding "user:password", the HTTP Basic credentials
-- of the location's auth_basic (keep it readable by Dovecot's auth processes only).
-- MAIL_AUTH_JSON_DISABLED is the Auth-Status text of a disabled account (the location's
-- mail_auth_json_disabled_message, default "Account not enabled").
--
-- Results: 200 -> OK (the user name becomes the store's canonical one, Auth-User);
-- a verdict, a 403 whose body is JSON with "ok": false (the module's refusals): with the
-- disabled text -> USER_DISABLED, otherwise PASSWORD_MISMATCH (passdb) or USER_UNKNOWN
-- (userdb); anything else (5xx, no answer, a malformed one, a 403 without that body: nginx's
-- own for a missing auth_basic_user_file or a deny rule, the module's for a foreign Host)
-- -> INTERNAL_FAILURE, so a broken store or setup never looks like a wrong password or an
-- unknown user and is not kept in Dovecot's auth cache.
-- Attributes of the answer become userdb fields (mail, quota_rule, ...): an attribute with
-- several values gives the first to NAME, the next ones to NAME2, NAME3 ... (as quota_rule2).

local cjson = require("cjson.safe")

local url = os.getenv("MAIL_AUTH_JSON_URL") or "http://127.0.0.1:9180/dovecot"
local credentials_file = os.getenv("MAIL_AUTH_JSON_CREDENTIALS") or "/etc/dovecot/mail-auth-json.secret"
local disabled_text = os.getenv("MAIL_AUTH_JSON_DISABLED") or "Account not enabled"

local client
local authorization

local function base64(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = (n >> 18) & 63
    local c2 = (n >> 12) & 63
    local c3 = (n >> 6) & 63
    local c4 = n & 63
    out[#out + 1] = chars:sub(c1 + 1, c1 + 1) .. chars:sub(c2 + 1, c2 + 1)
      .. (b and chars:sub(c3 + 1, c3 + 1) or "=") .. (c and chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function script_init()
  local f, err = io.open(credentials_file, "r")
  if not f then
    dovecot.i_error("mail-auth: cannot read " .. credentials_file .. ": " .. tostring(err))
    return 1
  end
  local line = f:read("l") or ""
  f:close()
  authorization = "Basic " .. base64(line)
  client = dovecot.http.client({ timeout = 10000, max_attempts = 1, debug = false })
  return 0
end

function script_deinit()
end

-- POST the login's details; returns status, Auth-Status, decoded body (or nil, error text)
local function call(req, password, mode)
  local r = client:request({ url = url .. (mode and ("?mode=" .. mode) or ""), method = "POST" })
  r:add_header("Authorization", authorization)
  r:add_header("Content-Type", "application/json")
  r:add_header("Accept", "application/json")
  local session = req:var_expand("%{session}")
  if session ~= "" then
    r:add_header("X-Dovecot-Session", session)
  end
  local secured = req:var_expand("%{secured}")
  r:set_payload(cjson.encode({
    username = req.user,
    password = password or "",
    client_ip = req:var_expand("%{rip}"),
    client_port = req:var_expand("%{rport}"),
    client_id = req:var_expand("%{client_id}"),
    local_ip = req:var_expand("%{lip}"),
    local_port = req:var_expand("%{lport}"),
    service = req.service,
    method = string.lower(req:var_expand("%{mech}")),
    ssl = (secured ~= "" and secured ~= "0") and "1" or "",
  }))
  local resp = r:submit()
  local status = resp:status()
  local auth_status = resp:header("Auth-Status") or ""
  local ns = resp:header("X-Nauthilus-Session") or "-"
  local body = cjson.decode(resp:payload() or "")
  req:log_debug("mail-auth: " .. (mode or "auth") .. " status=" .. tostring(status) .. " session=" .. ns)
  -- Auth-User: the account's canonical name (may differ from what the client typed)
  local user = resp:header("Auth-User")
  if user == nil or user == "" then
    user = req.user
  end
  return status, auth_status, body, ns, user
end

-- A refusal by the module itself: 403 with a JSON body whose "ok" is false. Any other 403
-- (nginx's HTML page when auth_basic_user_file is missing, a deny rule, the module's
-- {"error": ...} for a foreign Host or a browser) says nothing about the user or the password.
local function verdict(status, body)
  return status == 403 and type(body) == "table" and body.ok == false
end

-- userdb fields from the answer's attributes
local function fields(body, user)
  local out = { user = user }
  local attrs = type(body) == "table" and body.attributes or nil
  local account_field = type(body) == "table" and body.account_field or nil
  if type(attrs) == "table" then
    for name, values in pairs(attrs) do
      if name == account_field then
        -- the account name itself (the user field above has it)
      elseif type(values) == "table" then
        for i, v in ipairs(values) do
          out[i == 1 and name or (name .. i)] = tostring(v)
        end
      elseif type(values) == "string" then
        out[name] = values
      end
    end
  end
  return out
end

function auth_password_verify(req, password)
  local ok, status, auth_status, body, ns, user = pcall(call, req, password, nil)
  if not ok then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mail-auth: " .. tostring(status)
  end
  if status == 200 and type(body) == "table" and body.ok == true and auth_status == "OK" then
    return dovecot.auth.PASSDB_RESULT_OK, { user = user }
  end
  if verdict(status, body) then
    if auth_status == disabled_text then
      return dovecot.auth.PASSDB_RESULT_USER_DISABLED, auth_status
    end
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, auth_status
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
    "mail-auth: HTTP " .. tostring(status) .. (status == 403 and " (not a refusal by the module)" or "")
      .. " " .. auth_status .. " session=" .. ns
end

-- A credentials lookup (non-plaintext mechanisms such as CRAM-MD5): the store's passwords never
-- leave nginx, so there is none to give.
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, "mail-auth: only plaintext mechanisms"
end

function auth_userdb_lookup(req)
  local ok, status, auth_status, body, ns, user = pcall(call, req, nil, "no-auth")
  if not ok then
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "mail-auth: " .. tostring(status)
  end
  if status == 200 and type(body) == "table" and body.ok == true then
    return dovecot.auth.USERDB_RESULT_OK, fields(body, user)
  end
  if verdict(status, body) then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, auth_status
  end
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE,
    "mail-auth: HTTP " .. tostring(status) .. (status == 403 and " (not a refusal by the module)" or "")
      .. " " .. auth_status .. " session=" .. ns
end

function auth_userdb_iterate()
  local r = client:request({ url = url .. "?mode=list-accounts", method = "GET" })
  r:add_header("Authorization", authorization)
  r:add_header("Accept", "application/json")
  local resp = r:submit()
  if resp:status() ~= 200 then
    error("mail-auth: list-accounts: HTTP " .. tostring(resp:status()))
  end
  local names = cjson.decode(resp:payload() or "")
  if type(names) ~= "table" then
    error("mail-auth: list-accounts: not a JSON array")
  end
  local out = {}
  for _, n in ipairs(names) do
    if type(n) == "string" then
      out[#out + 1] = n
    end
  end
  return out
end
