# ruff: noqa: RUF001 - Russian text: Cyrillic letters that look Latin are meant
"""Every phrase of the connect page (`/api/oauth/callback`), in Russian and English.

Keys are grouped by page; `{fields}` are filled by `prometei.web.i18n.Texts`. Environment
variable names, commands and menu paths stay as they are in both languages (people copy them).
"""

from __future__ import annotations

from prometei.web.i18n import Catalog

TEXTS: Catalog = {
    # ---- shared ----
    "action.connect": {"ru": "Подключить amoCRM", "en": "Connect amoCRM"},
    "action.connect_again": {"ru": "Подключить amoCRM заново", "en": "Connect amoCRM again"},
    "action.status": {"ru": "Показать статус подключения", "en": "Show connection status"},
    "fact.account": {"ru": "Аккаунт", "en": "Account"},
    "fact.status": {"ru": "Статус", "en": "Status"},
    "fact.mode": {"ru": "Режим", "en": "Mode"},
    "bad_request": {"ru": "Неверный запрос", "en": "Bad request"},
    # ---- the status page ----
    "status.title": {"ru": "Подключение amoCRM", "en": "amoCRM connection"},
    "status.connected": {"ru": "подключено", "en": "connected"},
    "status.not_connected": {"ru": "не подключено", "en": "not connected"},
    "badge.connected": {"ru": "Подключено", "en": "Connected"},
    "badge.not_connected": {"ru": "Не подключено", "en": "Not connected"},
    "badge.long_lived": {"ru": "Долгосрочный токен", "en": "Long-lived token"},
    "status.connected.p1": {
        "ru": "prometei подключён к amoCRM и сам продлевает доступ: функция "
        "amocrm-token-keepalive раз в сутки следит, чтобы трёхмесячный срок не истёк.",
        "en": "prometei is connected to amoCRM and renews its access by itself: the daily "
        "amocrm-token-keepalive function keeps the 3-month refresh window from lapsing.",
    },
    "status.connected.p2": {
        "ru": "Подключайте заново, только если доступ был отозван или интеграция изменилась.",
        "en": "Connect again only if amoCRM access was revoked or the integration changed.",
    },
    "status.not_connected.p1": {
        "ru": "У prometei пока нет доступа к amoCRM, поэтому сделки не читаются. Нажмите "
        "кнопку, войдите в amoCRM как администратор аккаунта и разрешите доступ.",
        "en": "prometei has no access to amoCRM yet, so it cannot read leads. Click the "
        "button, sign in to amoCRM as an administrator of the account and allow access.",
    },
    "status.unusable.p1": {
        "ru": "Сохранённое подключение использовать нельзя (причина — в журнале функций и в "
        "выводе python -m prometei tokens status). Подключите amoCRM заново.",
        "en": "The stored connection cannot be used (the reason is in the function logs and "
        "in python -m prometei tokens status). Connect amoCRM again.",
    },
    "status.button_valid": {
        "ru": "После нажатия кнопки завершите подключение в amoCRM в течение {minutes} минут "
        "и в этом же браузере.",
        "en": "Once you click the button, finish connecting in amoCRM within {minutes} "
        "minutes, in this same browser.",
    },
    "status.details": {
        "ru": "Где хранятся токены и когда они обновлялись, показывает команда "
        "python -m prometei tokens status.",
        "en": "Where the tokens are kept and when they were renewed: "
        "python -m prometei tokens status.",
    },
    # ---- long-lived token mode ----
    "long_lived.mode": {
        "ru": "долгосрочный токен (AMOCRM_ACCESS_TOKEN)",
        "en": "long-lived token (AMOCRM_ACCESS_TOKEN)",
    },
    "long_lived.p1": {
        "ru": "Этот сервис использует долгосрочный токен amoCRM (AMOCRM_ACCESS_TOKEN), поэтому "
        "OAuth не нужен и подключать здесь нечего.",
        "en": "This deployment uses a long-lived amoCRM token (AMOCRM_ACCESS_TOKEN), so OAuth "
        "is not used and there is nothing to connect here.",
    },
    "long_lived.p2": {
        "ru": "Когда срок токена подходит к концу, создайте новый в amoCRM (Настройки → "
        "Интеграции → ваша закрытая интеграция → Ключи и доступы) и замените "
        "AMOCRM_ACCESS_TOKEN в Vercel.",
        "en": "When the token nears its expiry, create a new one in amoCRM (Settings → "
        "Integrations → your private integration → Keys and scopes) and replace "
        "AMOCRM_ACCESS_TOKEN in Vercel.",
    },
    "long_lived.p3": {
        "ru": "Чтобы перейти на OAuth: удалите AMOCRM_ACCESS_TOKEN, задайте AMOCRM_CLIENT_ID, "
        "AMOCRM_CLIENT_SECRET и AMOCRM_REDIRECT_URI, выполните redeploy и откройте эту "
        "страницу снова.",
        "en": "To switch to OAuth instead: remove AMOCRM_ACCESS_TOKEN, set AMOCRM_CLIENT_ID, "
        "AMOCRM_CLIENT_SECRET and AMOCRM_REDIRECT_URI, redeploy and open this page again.",
    },
    "long_lived_code.title": {
        "ru": "OAuth в этом сервисе не используется",
        "en": "OAuth is not used by this deployment",
    },
    "long_lived_code.p1": {
        "ru": "Сервис настроен на долгосрочный токен (AMOCRM_ACCESS_TOKEN), поэтому код "
        "авторизации не обменян и ничего не сохранено.",
        "en": "This deployment is set up with a long-lived token (AMOCRM_ACCESS_TOKEN), so the "
        "authorization code was not exchanged and nothing was stored.",
    },
    "long_lived_code.p2": {
        "ru": "Чтобы перейти на OAuth, удалите AMOCRM_ACCESS_TOKEN в Vercel и выполните redeploy.",
        "en": "To use OAuth instead, remove AMOCRM_ACCESS_TOKEN in Vercel and redeploy.",
    },
    # ---- server-side problems ----
    "misconfigured.title": {"ru": "Сервис настроен не полностью", "en": "Server misconfigured"},
    "misconfigured.p2": {
        "ru": "Задайте переменные в проекте Vercel (Settings → Environment Variables), "
        "выполните redeploy и откройте эту страницу снова.",
        "en": "Set the variables in the Vercel project (Settings → Environment Variables), "
        "redeploy, then open this page again.",
    },
    "unexpected.title": {"ru": "Что-то пошло не так", "en": "Something went wrong"},
    "unexpected.p1": {
        "ru": "На сервере произошла непредвиденная ошибка; подробности — в журнале функций. "
        "Откройте страницу подключения, чтобы увидеть текущий статус, и попробуйте ещё раз.",
        "en": "The server hit an unexpected error; the details are in the function logs. "
        "Open the connect page to see the current status and try again.",
    },
    "store_down.title": {"ru": "Хранилище токенов недоступно", "en": "Token store unreachable"},
    "store_down.status_p1": {
        "ru": "Не удалось прочитать статус подключения из хранилища токенов, поэтому и "
        "сохранить новые токены сейчас не получится.",
        "en": "The connection status could not be read from the token store, so connecting "
        "now could not save the tokens either.",
    },
    "store_down.exchange_p1": {
        "ru": "Хранилище токенов не ответило, поэтому токены нельзя было бы сохранить. Код "
        "авторизации не использован.",
        "en": "The token store did not answer, so the tokens could not have been saved. The "
        "authorization code was not used.",
    },
    "store_down.start_p1": {
        "ru": "Подключение не начато: хранилище токенов не ответило, поэтому и сохранить "
        "новые токены сейчас не получится.",
        "en": "Connecting did not start: the token store did not answer, so the new tokens "
        "could not be saved either.",
    },
    "too_slow.title": {
        "ru": "Хранилище токенов отвечает слишком медленно",
        "en": "The token store is answering too slowly",
    },
    "too_slow.p1": {
        "ru": "Проверки перед обменом кода заняли слишком много времени: обмен и сохранение "
        "токенов могли не уложиться в лимит времени функции. Код авторизации не отправлен в "
        "amoCRM, ничего не изменилось.",
        "en": "The checks before the code exchange took too long: the exchange and saving the "
        "tokens might not have finished within the function's time limit. The authorization "
        "code was not sent to amoCRM and nothing changed.",
    },
    "too_slow.p2": {
        "ru": "Нажмите кнопку, чтобы подключить amoCRM заново; если это повторяется, проверьте "
        "хранилище (Vercel KV / Upstash) — подробности в журнале функций.",
        "en": "Click the button to connect amoCRM again; if it keeps happening, check the "
        "store (Vercel KV / Upstash): the details are in the function logs.",
    },
    "store_down.fix": {
        "ru": "Проверьте KV_REST_API_URL / KV_REST_API_TOKEN (или интеграцию Vercel KV), "
        "затем откройте страницу снова; подробности — в журнале функций.",
        "en": "Check KV_REST_API_URL / KV_REST_API_TOKEN (or the Vercel KV integration), then "
        "open this page again; the details are in the function logs.",
    },
    "not_saved.title": {"ru": "Токены не сохранены", "en": "Tokens could not be saved"},
    "not_saved.p1": {
        "ru": "amoCRM выдал токены, но хранилище их не приняло, поэтому подключение не "
        "активно. Код авторизации уже израсходован.",
        "en": "amoCRM issued tokens, but the token store did not accept them, so the "
        "connection is not active. The authorization code is now spent.",
    },
    "not_saved.p2": {
        "ru": "Исправьте хранилище токенов (KV_REST_API_URL / KV_REST_API_TOKEN или "
        "интеграция Vercel KV) и нажмите «Подключить amoCRM» ещё раз.",
        "en": "Fix the token store (KV_REST_API_URL / KV_REST_API_TOKEN, or the Vercel KV "
        "integration), then click Connect amoCRM again.",
    },
    "busy.title": {"ru": "Идёт обновление токена", "en": "A token refresh is in progress"},
    "busy.p1": {
        "ru": "Другая часть prometei прямо сейчас продлевает токены amoCRM, поэтому "
        "подключению нужно подождать. Код авторизации не использован, ничего не изменилось.",
        "en": "Another part of prometei is renewing the amoCRM tokens right now, so connecting "
        "has to wait for it. The authorization code was not used and nothing changed.",
    },
    "busy.p2": {
        "ru": "Попробуйте через минуту: обновите эту страницу (код действует {minutes} минут) "
        "или нажмите кнопку, чтобы начать заново.",
        "en": "Try again in a minute: reload this page (the code stays valid for {minutes} "
        "minutes), or click the button to start again.",
    },
    "body.p1": {
        "ru": "Тело запроса не принято: {message}",
        "en": "The request body was refused: {message}",
    },
    # ---- amoCRM's answer on the redirect ----
    "declined.title": {"ru": "Доступ не предоставлен", "en": "Access was not granted"},
    "declined.p1": {
        "ru": "amoCRM сообщает, что в доступе к аккаунту отказано (access_denied): токены не "
        "выданы, здесь ничего не изменилось.",
        "en": "amoCRM reports that access to the account was declined (access_denied), so no "
        "tokens were issued and nothing changed here.",
    },
    "declined.p2": {
        "ru": "Чтобы подключить, нажмите кнопку ниже и выберите «Разрешить» на странице "
        "amoCRM. Подключать должен администратор аккаунта amoCRM.",
        "en": "To connect, click the button below and choose “Allow” on amoCRM's page. The "
        "person connecting must be an administrator of the amoCRM account.",
    },
    "amo_error.title": {
        "ru": "amoCRM не разрешил подключение",
        "en": "amoCRM did not authorize the connection",
    },
    "amo_error.p1": {
        "ru": "amoCRM вернул ошибку «{error}»; токены не выданы.",
        "en": "amoCRM redirected back with the error “{error}”; no tokens were issued.",
    },
    "amo_error.p2": {
        "ru": "Нажмите кнопку ниже, чтобы начать заново. Если ошибка повторяется, проверьте "
        "интеграцию в amoCRM (Настройки → Интеграции) и что её Redirect URI в точности "
        "совпадает с AMOCRM_REDIRECT_URI.",
        "en": "Click the button below to start again. If it keeps failing, check the "
        "integration in amoCRM (Settings → Integrations) and that its Redirect URI matches "
        "AMOCRM_REDIRECT_URI exactly.",
    },
    "bad_code.p1": {
        "ru": "Код авторизации в адресе пустой или повреждён.",
        "en": "The authorization code in the address is empty or malformed.",
    },
    "other_integration.title": {
        "ru": "Код выдан другой интеграции",
        "en": "Code for another integration",
    },
    "other_integration.p1": {
        "ru": "amoCRM выдал этот код не интеграции AMOCRM_CLIENT_ID, а другой, поэтому здесь "
        "он не подходит. Начните со страницы подключения этого сервиса.",
        "en": "amoCRM issued this code to a different integration than AMOCRM_CLIENT_ID, so it "
        "cannot be used here. Start from this deployment's connect page.",
    },
    # ---- the state and the browser ----
    "state.invalid.title": {
        "ru": "Ссылка подключения недействительна",
        "en": "This connect link is not valid",
    },
    "state.invalid.p1": {
        "ru": "Ссылка, по которой вы пришли, устарела или выдана не этим сервисом, поэтому "
        "код не использован. Ссылка подключения действует {minutes} минут.",
        "en": "The link that brought you here has expired or was not issued by this "
        "deployment, so the code was not used. Connect links are valid for {minutes} minutes.",
    },
    "state.missing.p1": {
        "ru": "В адресе есть код авторизации, но нет параметра state, поэтому его нельзя "
        "сопоставить с подключением, начатым на этом сервисе. Код не использован.",
        "en": "The address has an authorization code but no state, so it cannot be matched "
        "to a connect request from this deployment. The code was not used.",
    },
    "state.restart": {
        "ru": "Нажмите кнопку, чтобы начать заново со страницы подключения.",
        "en": "Click the button to start again from this deployment's connect page.",
    },
    "widget.title": {
        "ru": "Установка интеграции не подключает сервис",
        "en": "Installing the integration does not connect this deployment",
    },
    "widget.p1": {
        "ru": "amoCRM прислал код при установке интеграции (from_widget). Такой код не "
        "привязан к браузеру, в котором начато подключение, поэтому он не использован.",
        "en": "amoCRM sent this code while the integration was being installed "
        "(from_widget). Such a code is not tied to the browser that started a connection, so "
        "it was not used.",
    },
    "widget.p2": {
        "ru": "Чтобы подключить, нажмите кнопку ниже и разрешите доступ.",
        "en": "To connect, click the button below and allow access.",
    },
    "browser.title": {
        "ru": "Подключение начато в другом браузере",
        "en": "The connection was started in another browser",
    },
    "browser.p1": {
        "ru": "Подключение нужно завершить в том же браузере, где была нажата кнопка "
        "«Подключить amoCRM»: так чужая ссылка не сможет подключить сюда другой аккаунт. Код "
        "не использован.",
        "en": "A connection must finish in the browser where Connect amoCRM was clicked, so "
        "that a link from someone else cannot connect a different account here. The code was "
        "not used.",
    },
    "browser.p2": {
        "ru": "Нажмите кнопку ниже в этом браузере и разрешите доступ ещё раз (cookie этого "
        "сайта должны быть разрешены).",
        "en": "Click the button below in this browser and allow access again (cookies must "
        "be allowed for this site).",
    },
    "used.title": {
        "ru": "Эта ссылка подключения уже использована",
        "en": "This connect link was already used",
    },
    "used.p1": {
        "ru": "Каждая кнопка подключения срабатывает один раз, а эта уже сработала или "
        "истекла. Код повторно в amoCRM не отправлялся.",
        "en": "Each Connect button works once, and this one was already used or has expired. "
        "The code was not sent to amoCRM again.",
    },
    "used.p2": {
        "ru": "Текущее состояние — на странице статуса.",
        "en": "The status page shows where things stand.",
    },
    "foreign.title": {"ru": "Другой аккаунт amoCRM", "en": "Another amoCRM account"},
    "foreign.p1": {
        "ru": "Этот сервис работает только с аккаунтом amoCRM {host}; авторизация пришла из "
        "другого или неизвестного аккаунта, поэтому код не использован.",
        "en": "This deployment serves the amoCRM account {host} only; the authorization came "
        "from a different or unrecognised account, so the code was not used.",
    },
    "foreign.p2": {
        "ru": "Войдите в {host} и подключите заново.",
        "en": "Sign in to {host} in amoCRM and connect again.",
    },
    # ---- the token endpoint's answer ----
    "refused_code.title": {
        "ru": "amoCRM отклонил код авторизации",
        "en": "amoCRM refused the authorization code",
    },
    "refused_code.p1": {
        "ru": "Код истёк или уже был использован. Код авторизации срабатывает один раз и "
        "только {minutes} минут: нажмите «Подключить amoCRM» ещё раз, чтобы получить новый.",
        "en": "The code has expired or was already used. An authorization code works once and "
        "only for {minutes} minutes: click Connect amoCRM again to get a new one.",
    },
    "redirect_uri.hint": {
        "ru": "Если ошибка повторяется, проверьте, что AMOCRM_REDIRECT_URI в точности совпадает "
        "с Redirect URI интеграции (включая завершающую косую черту).",
        "en": "If it keeps failing, check that AMOCRM_REDIRECT_URI matches the integration's "
        "Redirect URI exactly (including a trailing slash).",
    },
    "moved.title": {
        "ru": "Аккаунт amoCRM не найден по своему адресу",
        "en": "The amoCRM account was not found at its address",
    },
    "moved.p1": {
        "ru": "{detail}. Если аккаунт переименован или переехал на другой домен, обновите "
        "AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN, выполните redeploy и подключите заново.",
        "en": "{detail}. If the account was renamed or moved to another domain, update "
        "AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN, redeploy and connect again.",
    },
    "amo_refused.title": {"ru": "amoCRM отклонил запрос", "en": "amoCRM refused the request"},
    "amo_refused.p2": {
        "ru": "Ничего не сохранено. Устраните причину выше и подключите заново.",
        "en": "Nothing was stored. Fix the cause above, then connect again.",
    },
    "amo_down.title": {"ru": "amoCRM не отвечает", "en": "amoCRM is not answering"},
    "amo_down.p1": {
        "ru": "Сервер токенов amoCRM ответил ошибкой ({detail}). Обычно это временно: "
        "подождите минуту и попробуйте снова.",
        "en": "amoCRM's token endpoint failed ({detail}). This is usually temporary: wait a "
        "minute and try again.",
    },
    "exchange_failed.title": {"ru": "Обмен кода не удался", "en": "The code exchange failed"},
    "exchange_failed.p1": {
        "ru": "amoCRM не принял обмен кода ({detail}).",
        "en": "amoCRM did not accept the code exchange ({detail}).",
    },
}
