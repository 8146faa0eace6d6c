/* placeholder, replaced by the real module */ typedef int cn_placeholder_client;
