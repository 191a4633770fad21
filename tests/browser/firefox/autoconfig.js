// Firefox ESR autoconfig (defaults/pref/): run webauthn-user.cfg, a privileged script, at startup.
pref("general.config.filename", "webauthn-user.cfg");
pref("general.config.obscure_value", 0);
pref("general.config.sandbox_enabled", false);
