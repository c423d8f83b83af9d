# bash completion for cairn and cairnd (installed under both names). Commands, verbs and
# options come from the programs themselves (`cairn help --commands`, `cairn help --verbs
# CMD`, `cairn help --options CMD`), so they never drift.
_cairn_complete() {
    local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]}
    local IFS=$'\n'
    COMPREPLY=()
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "$("$prog" help --commands 2>/dev/null)"$'\n'help -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$("$prog" help --options "$cmd" 2>/dev/null)" -- "$cur"))
        [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null
        return
    fi
    if [[ $COMP_CWORD -eq 2 ]]; then
        case $cmd in
        help) COMPREPLY=($(compgen -W "$("$prog" help --commands 2>/dev/null)" -- "$cur")); return ;;
        esac
        local verbs
        verbs=$("$prog" help --verbs "$cmd" 2>/dev/null)
        if [[ -n $verbs ]]; then
            COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
            return
        fi
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
    compopt -o filenames 2>/dev/null
}
complete -F _cairn_complete cairn cairnd
